//! Device-mapper through its ioctls on `/dev/mapper/control` (`linux/dm-ioctl.h`, interface
//! version 4): create a device, load one target's table, resume it. Enough for a read-only
//! `verity` device; no libdevmapper, no udev.
//!
//! Every ioctl takes a `struct dm_ioctl` header (312 bytes) optionally followed by data; for
//! `DM_TABLE_LOAD` the data is one `struct dm_target_spec` (40 bytes) and its parameter
//! string, NUL-terminated and padded to 8 bytes.

use nix::errno::Errno;

/// `sizeof(struct dm_ioctl)`, also the size encoded in every ioctl number.
pub const HEADER_SIZE: usize = 312;
/// `sizeof(struct dm_target_spec)`.
pub const SPEC_SIZE: usize = 40;
/// The control device devtmpfs creates when device-mapper is built in.
pub const CONTROL: &str = "/dev/mapper/control";

const NAME_LEN: usize = 128;
const TYPE_NAME_LEN: usize = 16;
/// The interface version this code speaks; the kernel accepts any minor up to its own.
const VERSION: [u32; 3] = [4, 0, 0];
/// `DM_READONLY_FLAG`: the table opens its devices read-only, and the device is read-only.
pub const READONLY_FLAG: u32 = 1 << 0;
/// `DM_SUSPEND_FLAG`; `DM_DEV_SUSPEND` without it resumes.
pub const SUSPEND_FLAG: u32 = 1 << 1;

// Header offsets.
const O_VERSION: usize = 0;
const O_DATA_SIZE: usize = 12;
const O_DATA_START: usize = 16;
const O_TARGET_COUNT: usize = 20;
const O_FLAGS: usize = 28;
const O_DEV: usize = 40;
const O_NAME: usize = 48;

/// The device-mapper commands used here (the `nr` of `_IOWR(0xfd, nr, struct dm_ioctl)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    DevCreate,
    DevRemove,
    DevSuspend,
    TableLoad,
}

impl Cmd {
    pub fn nr(self) -> u8 {
        match self {
            Cmd::DevCreate => 3,
            Cmd::DevRemove => 4,
            Cmd::DevSuspend => 6,
            Cmd::TableLoad => 9,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cmd::DevCreate => "DM_DEV_CREATE",
            Cmd::DevRemove => "DM_DEV_REMOVE",
            Cmd::DevSuspend => "DM_DEV_SUSPEND",
            Cmd::TableLoad => "DM_TABLE_LOAD",
        }
    }
}

/// One ioctl buffer, 8-byte aligned as the kernel's structs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffer {
    words: Vec<u64>,
}

impl Buffer {
    fn zeroed(len: usize) -> Buffer {
        Buffer {
            words: vec![0; len.div_ceil(8)],
        }
    }

    pub fn len(&self) -> usize {
        self.words.len() * 8
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The bytes, in memory order.
    pub fn bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    fn set(&mut self, at: usize, data: &[u8]) {
        let mut bytes = self.bytes();
        bytes[at..at + data.len()].copy_from_slice(data);
        for (w, chunk) in self.words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_ne_bytes(b);
        }
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = self.bytes();
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    fn u64_at(&self, at: usize) -> u64 {
        let b = self.bytes();
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_ne_bytes(x)
    }

    /// The device name in the header.
    pub fn name(&self) -> String {
        let b = self.bytes();
        let name = &b[O_NAME..O_NAME + NAME_LEN];
        let end = name.iter().position(|c| *c == 0).unwrap_or(NAME_LEN);
        String::from_utf8_lossy(&name[..end]).into_owned()
    }

    pub fn flags(&self) -> u32 {
        self.u32_at(O_FLAGS)
    }

    pub fn target_count(&self) -> u32 {
        self.u32_at(O_TARGET_COUNT)
    }

    /// The `dev` field (the kernel's `huge_encode_dev`), decoded to (major, minor).
    pub fn dev(&self) -> (u32, u32) {
        decode_dev(self.u64_at(O_DEV))
    }

    /// The first target of a table load: (start sector, length, type, parameters).
    pub fn target(&self) -> Option<(u64, u64, String, String)> {
        if self.target_count() == 0 {
            return None;
        }
        let b = self.bytes();
        let spec = self.u32_at(O_DATA_START) as usize;
        let end = (self.u32_at(O_DATA_SIZE) as usize).min(b.len());
        let start = self.u64_at(spec);
        let length = self.u64_at(spec + 8);
        let c_str = |s: &[u8]| {
            let n = s.iter().position(|c| *c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..n]).into_owned()
        };
        let kind = c_str(b.get(spec + 24..spec + SPEC_SIZE)?);
        let params = c_str(b.get(spec + SPEC_SIZE..end)?);
        Some((start, length, kind, params))
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut u64 {
        self.words.as_mut_ptr()
    }
}

/// `new_decode_dev`: minor's low 8 bits, major's 12, minor's upper 12.
pub fn decode_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    (major, minor)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DmError {
    #[error("the table line {0:?} is not \"0 <sectors> <target type> <parameters>\"")]
    Line(String),
    #[error("the device-mapper name {0:?} is empty or longer than 127 bytes")]
    Name(String),
    #[error("the table line contains a NUL byte")]
    Params,
    #[error("{cmd} for {name} failed")]
    Ioctl {
        cmd: &'static str,
        name: String,
        #[source]
        source: Errno,
    },
}

/// A header for `name` with `flags`, sized to hold `extra` bytes of data after it.
pub fn header(name: &str, flags: u32, extra: usize) -> Result<Buffer, DmError> {
    if name.is_empty() || name.len() >= NAME_LEN || name.contains('\0') {
        return Err(DmError::Name(name.to_owned()));
    }
    let mut buf = Buffer::zeroed(HEADER_SIZE + extra);
    let len = buf.len();
    let version: Vec<u8> = VERSION.iter().flat_map(|v| v.to_ne_bytes()).collect();
    buf.set(O_VERSION, &version);
    buf.set(O_DATA_SIZE, &(len as u32).to_ne_bytes());
    buf.set(O_DATA_START, &(HEADER_SIZE as u32).to_ne_bytes());
    buf.set(O_FLAGS, &flags.to_ne_bytes());
    buf.set(O_NAME, name.as_bytes());
    Ok(buf)
}

/// A `DM_TABLE_LOAD` buffer with one target of `sectors` sectors from sector 0.
pub fn table_load(
    name: &str,
    flags: u32,
    kind: &str,
    sectors: u64,
    params: &str,
) -> Result<Buffer, DmError> {
    if params.contains('\0') {
        return Err(DmError::Params);
    }
    // Parameters, their NUL, padded so the (absent) next spec would be aligned.
    let params_len = (params.len() + 1).next_multiple_of(8);
    let mut buf = header(name, flags, SPEC_SIZE + params_len)?;
    buf.set(O_TARGET_COUNT, &1u32.to_ne_bytes());
    let spec = HEADER_SIZE;
    buf.set(spec, &0u64.to_ne_bytes());
    buf.set(spec + 8, &sectors.to_ne_bytes());
    // status (s32) stays 0; next: offset from this spec to the next, past the parameters.
    buf.set(spec + 20, &((SPEC_SIZE + params_len) as u32).to_ne_bytes());
    let mut type_name = [0u8; TYPE_NAME_LEN];
    let n = kind.len().min(TYPE_NAME_LEN - 1);
    type_name[..n].copy_from_slice(&kind.as_bytes()[..n]);
    buf.set(spec + 24, &type_name);
    buf.set(spec + SPEC_SIZE, params.as_bytes());
    Ok(buf)
}

/// Splits a one-target table line, `0 <sectors> <type> <parameters>`, as `dmsetup` takes it.
pub fn parse_line(line: &str) -> Result<(u64, &str, &str), DmError> {
    let bad = || DmError::Line(line.chars().take(200).collect());
    let mut words = line.splitn(4, ' ');
    let (Some("0"), Some(sectors), Some(kind), Some(params)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(bad());
    };
    let sectors = sectors.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    if kind.is_empty() || kind.len() >= TYPE_NAME_LEN {
        return Err(bad());
    }
    Ok((sectors, kind, params))
}

/// Issues device-mapper ioctls: on `/dev/mapper/control` in the guest, a recorder in tests.
pub trait DmControl {
    fn dm_ioctl(&mut self, cmd: Cmd, buf: &mut Buffer) -> Result<(), Errno>;
}

/// Creates the read-only device `name` with the one-target table `line` (see
/// [`parse_line`]), and resumes it (a new device is suspended until then). Returns the
/// device's (major, minor). A device left half-made by a failed load is removed again.
pub fn create_readonly(
    ctl: &mut impl DmControl,
    name: &str,
    line: &str,
) -> Result<(u32, u32), DmError> {
    let (sectors, kind, params) = parse_line(line)?;
    let failed = |cmd: Cmd| {
        let name = name.to_owned();
        move |source| DmError::Ioctl {
            cmd: cmd.name(),
            name,
            source,
        }
    };
    let mut load = table_load(name, READONLY_FLAG, kind, sectors, params)?;
    let mut create = header(name, 0, 0)?;
    ctl.dm_ioctl(Cmd::DevCreate, &mut create)
        .map_err(failed(Cmd::DevCreate))?;
    let dev = create.dev();
    let finish = ctl
        .dm_ioctl(Cmd::TableLoad, &mut load)
        .map_err(failed(Cmd::TableLoad));
    let finish = finish.and_then(|()| {
        let mut resume = header(name, 0, 0)?;
        ctl.dm_ioctl(Cmd::DevSuspend, &mut resume)
            .map_err(failed(Cmd::DevSuspend))
    });
    if let Err(e) = finish {
        // Best effort: the boot fails anyway, and the first error is the one worth naming.
        if let Ok(mut remove) = header(name, 0, 0) {
            let _ = ctl.dm_ioctl(Cmd::DevRemove, &mut remove);
        }
        return Err(e);
    }
    Ok(dev)
}

/// The real control device.
pub struct Control {
    fd: std::os::fd::OwnedFd,
}

impl Control {
    pub fn open() -> std::io::Result<Control> {
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .open(CONTROL)?;
        Ok(Control { fd: file.into() })
    }
}

impl DmControl for Control {
    fn dm_ioctl(&mut self, cmd: Cmd, buf: &mut Buffer) -> Result<(), Errno> {
        use std::os::fd::AsRawFd;
        let request = nix::request_code_readwrite!(0xfd, cmd.nr(), HEADER_SIZE);
        // SAFETY: `buf` is at least HEADER_SIZE bytes, 8-byte aligned, and its `data_size`
        // field holds its true length, so the kernel reads and writes only inside it; the
        // fd is an open /dev/mapper/control for the whole call.
        let rc = unsafe {
            nix::libc::ioctl(
                self.fd.as_raw_fd(),
                request as nix::sys::ioctl::ioctl_num_type,
                buf.as_mut_ptr(),
            )
        };
        Errno::result(rc).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_carries_version_sizes_flags_and_name() {
        let buf = header("hostos-payload", READONLY_FLAG, 0).unwrap();
        let b = buf.bytes();
        assert_eq!(buf.len(), HEADER_SIZE);
        assert_eq!(&b[0..12], [4u32, 0, 0].map(u32::to_ne_bytes).concat());
        assert_eq!(buf.u32_at(O_DATA_SIZE), 312);
        assert_eq!(buf.u32_at(O_DATA_START), 312);
        assert_eq!(buf.flags(), READONLY_FLAG);
        assert_eq!(buf.name(), "hostos-payload");
        assert_eq!(&b[O_NAME + 14..O_NAME + NAME_LEN], [0u8; NAME_LEN - 14]);
    }

    #[test]
    fn table_load_places_one_spec_and_its_padded_parameters_after_the_header() {
        let params = "1 254:2 254:2 4096 4096 10 11 sha256 ab -";
        let buf = table_load("p", READONLY_FLAG, "verity", 80, params).unwrap();
        let b = buf.bytes();
        // 41 bytes + NUL, padded to 48.
        assert_eq!(buf.len(), HEADER_SIZE + SPEC_SIZE + 48);
        assert_eq!(buf.u32_at(O_DATA_SIZE) as usize, buf.len());
        assert_eq!(buf.target_count(), 1);
        assert_eq!(buf.u64_at(HEADER_SIZE), 0);
        assert_eq!(buf.u64_at(HEADER_SIZE + 8), 80);
        assert_eq!(buf.u32_at(HEADER_SIZE + 16), 0, "status");
        assert_eq!(
            buf.u32_at(HEADER_SIZE + 20) as usize,
            SPEC_SIZE + 48,
            "next"
        );
        assert_eq!(&b[HEADER_SIZE + 24..HEADER_SIZE + 31], b"verity\0");
        assert_eq!(
            buf.target(),
            Some((0, 80, "verity".into(), params.to_string()))
        );
        assert_eq!(b[HEADER_SIZE + SPEC_SIZE + params.len()], 0);
    }

    #[test]
    fn bad_names_and_parameters_are_refused_before_any_ioctl() {
        assert_eq!(header("", 0, 0), Err(DmError::Name(String::new())));
        assert!(header(&"x".repeat(128), 0, 0).is_err());
        assert!(header(&"x".repeat(127), 0, 0).is_ok());
        assert_eq!(
            table_load("p", 0, "verity", 8, "a\0b"),
            Err(DmError::Params)
        );
    }

    #[test]
    fn table_lines_split_into_length_type_and_parameters() {
        assert_eq!(parse_line("0 80 verity 1 a b"), Ok((80, "verity", "1 a b")));
        for bad in [
            "",
            "8 80 verity x",
            "0 x verity x",
            "0 80 verity",
            "0 0 verity x",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dev_numbers_decode_like_the_kernels_huge_encode_dev() {
        // 254:0, 253:300 (minor above 255 spills into the upper bits).
        assert_eq!(decode_dev(254 << 8), (254, 0));
        assert_eq!(
            decode_dev((300 & 0xff) | (253 << 8) | ((300 & !0xff) << 12)),
            (253, 300)
        );
    }

    #[derive(Default)]
    struct Recorder {
        calls: Vec<(Cmd, String, u32)>,
        tables: Vec<(u64, u64, String, String)>,
        fail: Option<Cmd>,
    }

    impl DmControl for Recorder {
        fn dm_ioctl(&mut self, cmd: Cmd, buf: &mut Buffer) -> Result<(), Errno> {
            self.calls.push((cmd, buf.name(), buf.flags()));
            if let Some(t) = buf.target() {
                self.tables.push(t);
            }
            if cmd == Cmd::DevCreate {
                buf.set(O_DEV, &(254u64 << 8 | 3).to_ne_bytes());
            }
            if self.fail == Some(cmd) {
                return Err(Errno::EINVAL);
            }
            Ok(())
        }
    }

    #[test]
    fn creates_loads_read_only_and_resumes_in_that_order() {
        let mut rec = Recorder::default();
        let dev = create_readonly(&mut rec, "hostos-payload", "0 80 verity 1 a b").unwrap();
        assert_eq!(dev, (254, 3));
        let name = "hostos-payload".to_string();
        assert_eq!(
            rec.calls,
            [
                (Cmd::DevCreate, name.clone(), 0),
                (Cmd::TableLoad, name.clone(), READONLY_FLAG),
                (Cmd::DevSuspend, name, 0),
            ]
        );
        assert_eq!(rec.tables, [(0, 80, "verity".into(), "1 a b".into())]);
    }

    #[test]
    fn a_refused_table_removes_the_device_and_names_the_ioctl() {
        let mut rec = Recorder {
            fail: Some(Cmd::TableLoad),
            ..Recorder::default()
        };
        let err = create_readonly(&mut rec, "p", "0 8 verity x").unwrap_err();
        assert_eq!(err.to_string(), "DM_TABLE_LOAD for p failed");
        let cmds: Vec<Cmd> = rec.calls.iter().map(|c| c.0).collect();
        assert_eq!(cmds, [Cmd::DevCreate, Cmd::TableLoad, Cmd::DevRemove]);
    }
}
