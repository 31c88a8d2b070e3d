//! Hostile tar pieces: PAX and GNU long-name records, and tar streams with huge records that
//! are generated as they are read, never held in memory.

use std::io::Read;

use super::RawTar;

/// One PAX record, `LEN key=value\n`, where LEN counts the whole record.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // Length digits, a space, `key=value` and the newline.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = len.to_string().len() + body;
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

/// Appends a PAX extended header for the next entry.
pub fn pax(t: &mut RawTar, records: &[(&str, &[u8])]) {
    let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
    t.entry("PaxHeaders/x", b'x', "", &data, 0o644);
}

/// Appends a GNU long-name record; the next entry's own name field is then ignored.
pub fn long_name(t: &mut RawTar, name: &str) {
    let mut data = name.as_bytes().to_vec();
    data.push(0);
    t.entry("././@LongLink", b'L', "", &data, 0o644);
}

/// A ustar header block alone, for a record whose data is generated.
pub fn header(name: &str, typ: u8, size: u64) -> Vec<u8> {
    let mut t = RawTar::new();
    t.entry(name, typ, "", b"", 0o644);
    let mut h = t.bytes;
    let field = format!("{size:011o}\0");
    h[124..136].copy_from_slice(field.as_bytes());
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A tar stream: a valid ACI prefix, then a `typ` record of `size` bytes of `fill` (made as it
/// is read), then one small file and the end marker.
pub fn huge_record(typ: u8, size: u64, fill: u8) -> impl Read {
    let prefix = RawTar::aci().bytes;
    let pad = (512 - size % 512) % 512;
    let tail = RawTar::new().file("rootfs/f", b"x").finish();
    std::io::Cursor::new(prefix)
        .chain(std::io::Cursor::new(header("././@LongLink", typ, size)))
        .chain(std::io::repeat(fill).take(size))
        .chain(std::io::repeat(0).take(pad))
        .chain(std::io::Cursor::new(tail))
}
