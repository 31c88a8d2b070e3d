//! Just enough of the flattened device tree format to add one node: U-Boot reads `bootdelay`
//! from `/config` in the device tree QEMU hands it, which is how we take its 2-second autoboot
//! countdown away without rebuilding U-Boot or writing its environment into flash.

/// `d00dfeed`, big-endian, as every FDT starts.
const MAGIC: u32 = 0xd00d_feed;
const HEADER_LEN: usize = 40;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// Free space left at the end for the firmware's own additions (U-Boot's EFI code grows the
/// tree by itself when it needs to, but starting with room costs nothing).
const SLACK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FdtError {
    #[error("the device tree is malformed: {0}")]
    Malformed(&'static str),
    #[error("the device tree already has a /config node")]
    HasConfig,
}

fn be32(bytes: &[u8], at: usize) -> Result<u32, FdtError> {
    bytes
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or(FdtError::Malformed("truncated"))
}

fn usize_at(bytes: &[u8], at: usize) -> Result<usize, FdtError> {
    usize::try_from(be32(bytes, at)?).map_err(|_| FdtError::Malformed("offset out of range"))
}

fn align4(n: usize) -> usize {
    n.next_multiple_of(4)
}

/// `dtb` with a `/config` node holding the given `u32` properties, rebuilt compactly.
pub fn with_config(dtb: &[u8], props: &[(&str, u32)]) -> Result<Vec<u8>, FdtError> {
    if be32(dtb, 0)? != MAGIC {
        return Err(FdtError::Malformed("bad magic"));
    }
    let off_struct = usize_at(dtb, 8)?;
    let off_strings = usize_at(dtb, 12)?;
    let off_rsvmap = usize_at(dtb, 16)?;
    let version = be32(dtb, 20)?;
    let last_comp = be32(dtb, 24)?;
    let boot_cpu = be32(dtb, 28)?;
    let size_strings = usize_at(dtb, 32)?;
    let size_struct = usize_at(dtb, 36)?;
    if version < 17 {
        return Err(FdtError::Malformed("version older than 17"));
    }
    let structure = dtb
        .get(off_struct..off_struct + size_struct)
        .ok_or(FdtError::Malformed("structure block out of range"))?;
    let strings = dtb
        .get(off_strings..off_strings + size_strings)
        .ok_or(FdtError::Malformed("strings block out of range"))?;
    let rsvmap = dtb
        .get(off_rsvmap..off_struct)
        .ok_or(FdtError::Malformed("reservation map out of range"))?;

    let root_end = root_end_node(structure)?;

    let mut new_strings = strings.to_vec();
    let mut node = Vec::new();
    node.extend_from_slice(&BEGIN_NODE.to_be_bytes());
    node.extend_from_slice(b"config\0");
    node.resize(align4(node.len()), 0);
    for (name, value) in props {
        let name_off = u32::try_from(new_strings.len())
            .map_err(|_| FdtError::Malformed("strings block too large"))?;
        new_strings.extend_from_slice(name.as_bytes());
        new_strings.push(0);
        node.extend_from_slice(&PROP.to_be_bytes());
        node.extend_from_slice(&4u32.to_be_bytes());
        node.extend_from_slice(&name_off.to_be_bytes());
        node.extend_from_slice(&value.to_be_bytes());
    }
    node.extend_from_slice(&END_NODE.to_be_bytes());

    let mut new_struct = Vec::with_capacity(structure.len() + node.len());
    new_struct.extend_from_slice(&structure[..root_end]);
    new_struct.extend_from_slice(&node);
    new_struct.extend_from_slice(&structure[root_end..]);

    let o_rsvmap = HEADER_LEN;
    let o_struct = o_rsvmap + rsvmap.len();
    let o_strings = o_struct + new_struct.len();
    let total = o_strings + new_strings.len() + SLACK;
    let field = |n: usize| {
        u32::try_from(n)
            .map(u32::to_be_bytes)
            .map_err(|_| FdtError::Malformed("tree too large"))
    };
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&field(total)?);
    out.extend_from_slice(&field(o_struct)?);
    out.extend_from_slice(&field(o_strings)?);
    out.extend_from_slice(&field(o_rsvmap)?);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&last_comp.to_be_bytes());
    out.extend_from_slice(&boot_cpu.to_be_bytes());
    out.extend_from_slice(&field(new_strings.len())?);
    out.extend_from_slice(&field(new_struct.len())?);
    out.extend_from_slice(rsvmap);
    out.extend_from_slice(&new_struct);
    out.extend_from_slice(&new_strings);
    out.resize(total, 0);
    Ok(out)
}

/// The offset in `structure` of the END_NODE token that closes the root node, after checking
/// the root has no `config` child.
fn root_end_node(structure: &[u8]) -> Result<usize, FdtError> {
    let mut at = 0;
    let mut depth = 0usize;
    loop {
        let token = be32(structure, at)?;
        match token {
            BEGIN_NODE => {
                let name_start = at + 4;
                let name_len = structure
                    .get(name_start..)
                    .and_then(|rest| rest.iter().position(|&b| b == 0))
                    .ok_or(FdtError::Malformed("unterminated node name"))?;
                let name = &structure[name_start..name_start + name_len];
                if depth == 1 && (name == b"config" || name.starts_with(b"config@")) {
                    return Err(FdtError::HasConfig);
                }
                depth += 1;
                at = align4(name_start + name_len + 1);
            }
            END_NODE => {
                depth = depth
                    .checked_sub(1)
                    .ok_or(FdtError::Malformed("unbalanced nodes"))?;
                if depth == 0 {
                    return Ok(at);
                }
                at += 4;
            }
            PROP => {
                let len = usize_at(structure, at + 4)?;
                at = align4(at + 12 + len);
            }
            NOP => at += 4,
            END => return Err(FdtError::Malformed("no root node end")),
            _ => return Err(FdtError::Malformed("unknown token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree `/ { model = "m"; cpus { }; }` built by hand.
    fn tiny() -> Vec<u8> {
        let mut st = Vec::new();
        let tok = |v: &mut Vec<u8>, t: u32| v.extend_from_slice(&t.to_be_bytes());
        tok(&mut st, BEGIN_NODE);
        st.extend_from_slice(&[0, 0, 0, 0]); // "" padded
        tok(&mut st, PROP);
        tok(&mut st, 2);
        tok(&mut st, 0);
        st.extend_from_slice(b"m\0\0\0");
        tok(&mut st, BEGIN_NODE);
        st.extend_from_slice(b"cpus\0\0\0\0");
        tok(&mut st, END_NODE);
        tok(&mut st, END_NODE);
        tok(&mut st, END);
        let strings = b"model\0".to_vec();
        let rsv = [0u8; 16];
        let o_struct = HEADER_LEN + rsv.len();
        let o_strings = o_struct + st.len();
        let total = o_strings + strings.len();
        let mut out = Vec::new();
        for v in [
            MAGIC,
            total as u32,
            o_struct as u32,
            o_strings as u32,
            HEADER_LEN as u32,
            17,
            16,
            0,
            strings.len() as u32,
            st.len() as u32,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&rsv);
        out.extend_from_slice(&st);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn config_node_goes_last_in_the_root_with_its_property() {
        let out = with_config(&tiny(), &[("bootdelay", 0)]).unwrap();
        let size_struct = usize_at(&out, 36).unwrap();
        let off_struct = usize_at(&out, 8).unwrap();
        let st = &out[off_struct..off_struct + size_struct];
        // ...cpus END_NODE, then BEGIN_NODE "config", PROP len 4 nameoff 6 value 0, END_NODE,
        // then the root's END_NODE and END.
        let tail: Vec<u8> = [
            &END_NODE.to_be_bytes()[..],
            &BEGIN_NODE.to_be_bytes(),
            b"config\0\0",
            &PROP.to_be_bytes(),
            &4u32.to_be_bytes(),
            &6u32.to_be_bytes(),
            &0u32.to_be_bytes(),
            &END_NODE.to_be_bytes(),
            &END_NODE.to_be_bytes(),
            &END.to_be_bytes(),
        ]
        .concat();
        assert!(st.ends_with(&tail), "{st:02x?}");
        let off_strings = usize_at(&out, 12).unwrap();
        let size_strings = usize_at(&out, 32).unwrap();
        assert_eq!(
            &out[off_strings..off_strings + size_strings],
            b"model\0bootdelay\0"
        );
        assert_eq!(usize_at(&out, 4).unwrap(), out.len());
        // Adding a second /config is refused rather than shadowed.
        assert!(matches!(
            with_config(&out, &[("bootdelay", 0)]),
            Err(FdtError::HasConfig)
        ));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(with_config(b"not a tree at all, really not", &[]).is_err());
        let mut bad = tiny();
        bad[0] = 0;
        assert!(matches!(
            with_config(&bad, &[]),
            Err(FdtError::Malformed("bad magic"))
        ));
    }
}
