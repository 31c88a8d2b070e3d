//! The power button: finds evdev devices that can send KEY_POWER and reads their events.
//!
//! QEMU's `system_powerdown` arrives as a KEY_POWER press: from the ACPI "Power Button" on
//! x86_64 (and on arm64 booted with ACPI), from `gpio-keys` on the PL061 on arm64 booted with a
//! device tree. Devices can register after init starts (probing, deferred probes), so the
//! directory is scanned again for the first seconds of the boot.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::console::{self, Line};

/// Where the kernel's devtmpfs puts evdev nodes.
pub const INPUT_DIR: &str = "/dev/input";

const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;
/// `KEY_MAX` from linux/input-event-codes.h; the EVIOCGBIT(EV_KEY) bitmap covers 0..=KEY_MAX.
const KEY_MAX: usize = 0x2ff;
const KEY_PRESS: i32 = 1;

/// `struct input_event`: a `struct timeval` followed by u16 type, u16 code, i32 value, in native
/// byte order. 24 bytes on both our 64-bit targets.
pub const EVENT_SIZE: usize = 2 * size_of::<nix::libc::c_long>() + 8;

/// The fields of one `struct input_event` that matter here (the timestamp does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

impl InputEvent {
    /// Parses one event from exactly [`EVENT_SIZE`] bytes.
    pub fn parse(bytes: &[u8; EVENT_SIZE]) -> Self {
        let tail = EVENT_SIZE - 8;
        let kind = u16::from_ne_bytes([bytes[tail], bytes[tail + 1]]);
        let code = u16::from_ne_bytes([bytes[tail + 2], bytes[tail + 3]]);
        let value = i32::from_ne_bytes([
            bytes[tail + 4],
            bytes[tail + 5],
            bytes[tail + 6],
            bytes[tail + 7],
        ]);
        Self { kind, code, value }
    }

    /// A press (not a release or an autorepeat) of KEY_POWER.
    pub fn is_power_press(&self) -> bool {
        self.kind == EV_KEY && self.code == KEY_POWER && self.value == KEY_PRESS
    }
}

/// Whether a buffer read from an evdev device holds a KEY_POWER press. evdev returns whole
/// events only; a trailing partial event would be a kernel bug and is ignored.
pub fn contains_power_press(buf: &[u8]) -> bool {
    buf.chunks_exact(EVENT_SIZE)
        .filter_map(|chunk| <&[u8; EVENT_SIZE]>::try_from(chunk).ok())
        .map(InputEvent::parse)
        .any(|event| event.is_power_press())
}

/// Whether an EVIOCGBIT(EV_KEY) bitmap has the KEY_POWER bit set.
pub fn can_send_power(key_bits: &[u8]) -> bool {
    key_bits
        .get(usize::from(KEY_POWER) / 8)
        .is_some_and(|byte| byte & (1 << (KEY_POWER % 8)) != 0)
}

#[derive(Debug, thiserror::Error)]
pub enum PowerButtonError {
    #[error("cannot list input devices in {path}")]
    ListDevices {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open input device {path}")]
    OpenDevice {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot query the keys input device {path} can send (EVIOCGBIT)")]
    QueryKeys {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot read events from input device {path}")]
    ReadEvents {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

// EVIOCGNAME(len) = _IOC(_IOC_READ, 'E', 0x06, len); EVIOCGBIT(ev, len) = _IOC(_IOC_READ, 'E',
// 0x20 + ev, len). The length comes from the slice the caller passes.
nix::ioctl_read_buf!(eviocgname, b'E', 0x06, u8);
nix::ioctl_read_buf!(eviocgbit_key, b'E', 0x20 + EV_KEY, u8);

struct Device {
    path: PathBuf,
    name: String,
    file: File,
}

/// What reading one device produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Activity {
    Nothing,
    /// KEY_POWER was pressed on the device with this name.
    Pressed(String),
    /// The device went away (ENODEV); it is no longer watched.
    Gone,
}

/// The set of watched devices.
pub struct PowerButtons {
    dir: PathBuf,
    devices: Vec<Device>,
    /// Every node already looked at, watched or not, so a rescan does not reopen or re-log it.
    seen: HashSet<PathBuf>,
}

impl PowerButtons {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            devices: Vec::new(),
            seen: HashSet::new(),
        }
    }

    /// Opens event devices not seen before and keeps those that can send KEY_POWER. Problems
    /// with single devices are logged as warnings; they must not stop the boot.
    pub fn scan(&mut self) -> Result<(), PowerButtonError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            // devtmpfs creates the directory with the first input device.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(PowerButtonError::ListDevices {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().as_encoded_bytes().starts_with(b"event"))
            .map(|e| e.path())
            .filter(|p| !self.seen.contains(p))
            .collect();
        // Stable log order across boots.
        paths.sort();
        for path in paths {
            self.seen.insert(path.clone());
            match open_device(&path) {
                Ok(Some(device)) => {
                    console::emit(&Line::Watching {
                        path: &device.path.display().to_string(),
                        name: &device.name,
                    });
                    self.devices.push(device);
                }
                Ok(None) => {}
                Err(e) => console::warn(&crate::fatal::chain(&e)),
            }
        }
        Ok(())
    }

    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.devices.iter().map(|d| d.file.as_fd())
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Drains the pending events of device `index` (as ordered by [`Self::fds`]).
    pub fn read(&mut self, index: usize) -> Result<Activity, PowerButtonError> {
        let Some(device) = self.devices.get_mut(index) else {
            return Ok(Activity::Nothing);
        };
        let mut buf = [0u8; EVENT_SIZE * 32];
        let mut pressed = false;
        loop {
            match device.file.read(&mut buf) {
                // An evdev node never ends; one that reports end of file would keep poll(2)
                // ready forever, so it is dropped like a device that went away.
                Ok(0) => {
                    let device = self.devices.remove(index);
                    return Ok(if pressed {
                        Activity::Pressed(device.name)
                    } else {
                        Activity::Gone
                    });
                }
                Ok(n) => pressed |= contains_power_press(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(Errno::ENODEV as i32) => {
                    self.devices.remove(index);
                    return Ok(Activity::Gone);
                }
                Err(source) => {
                    // Any other read error would repeat on every poll and spin PID1: stop
                    // watching the device and report the error once.
                    let device = self.devices.remove(index);
                    return Err(PowerButtonError::ReadEvents {
                        path: device.path,
                        source,
                    });
                }
            }
        }
        Ok(if pressed {
            Activity::Pressed(device.name.clone())
        } else {
            Activity::Nothing
        })
    }
}

/// Opens `path`; `None` when the device cannot send KEY_POWER (keyboards that can are kept:
/// a power key is a power key).
fn open_device(path: &Path) -> Result<Option<Device>, PowerButtonError> {
    let file = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| PowerButtonError::OpenDevice {
            path: path.to_path_buf(),
            source,
        })?;
    let mut key_bits = [0u8; KEY_MAX / 8 + 1];
    // SAFETY: the fd is open for the duration of the call, and the request's size field is
    // the length of `key_bits`, so the kernel writes only inside the buffer.
    unsafe { eviocgbit_key(file.as_raw_fd(), &mut key_bits) }.map_err(|source| {
        PowerButtonError::QueryKeys {
            path: path.to_path_buf(),
            source,
        }
    })?;
    if !can_send_power(&key_bits) {
        return Ok(None);
    }
    let mut name_buf = [0u8; 256];
    // SAFETY: as above; the kernel writes at most `name_buf.len()` bytes.
    let name = match unsafe { eviocgname(file.as_raw_fd(), &mut name_buf) } {
        Ok(_) => device_name(&name_buf),
        // The name is only for the log.
        Err(_) => String::from("unnamed"),
    };
    Ok(Some(Device {
        path: path.to_path_buf(),
        name,
        file,
    }))
}

fn device_name(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watching(file: File) -> PowerButtons {
        let mut buttons = PowerButtons::new("/nonexistent");
        buttons.devices.push(Device {
            path: PathBuf::from("/dev/input/event9"),
            name: "test".to_string(),
            file,
        });
        buttons
    }

    #[test]
    fn device_at_end_of_file_is_dropped_so_poll_cannot_spin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"").unwrap();
        let mut buttons = watching(File::open(&path).unwrap());
        assert!(matches!(buttons.read(0), Ok(Activity::Gone)));
        assert_eq!(buttons.len(), 0);
    }

    #[test]
    fn device_read_error_is_reported_once_and_dropped() {
        // Reading a directory fails with EISDIR: not "would block", not "gone".
        let dir = tempfile::tempdir().unwrap();
        let mut buttons = watching(File::open(dir.path()).unwrap());
        let err = buttons.read(0).unwrap_err();
        assert!(err.to_string().contains("/dev/input/event9"), "{err}");
        assert_eq!(buttons.len(), 0);
    }

    #[test]
    fn power_press_in_a_device_stream_is_reported_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let mut bytes = event(EV_KEY, KEY_POWER, 1).to_vec();
        bytes.extend_from_slice(&event(0, 0, 0));
        std::fs::write(&path, bytes).unwrap();
        let mut buttons = watching(File::open(&path).unwrap());
        // The regular file ends right after the events: the press read before the end still
        // counts, and the device is dropped.
        assert_eq!(
            buttons.read(0).unwrap(),
            Activity::Pressed("test".to_string())
        );
        assert_eq!(buttons.len(), 0);
    }

    fn event(kind: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut bytes = [0u8; EVENT_SIZE];
        // A non-zero timestamp, to show it is skipped.
        bytes[0] = 0x5a;
        let tail = EVENT_SIZE - 8;
        bytes[tail..tail + 2].copy_from_slice(&kind.to_ne_bytes());
        bytes[tail + 2..tail + 4].copy_from_slice(&code.to_ne_bytes());
        bytes[tail + 4..].copy_from_slice(&value.to_ne_bytes());
        bytes
    }

    #[test]
    fn input_event_is_24_bytes_on_64_bit() {
        #[cfg(target_pointer_width = "64")]
        assert_eq!(EVENT_SIZE, 24);
        assert_eq!(EVENT_SIZE, size_of::<nix::libc::input_event>());
    }

    #[test]
    fn parses_type_code_value_after_timestamp() {
        let parsed = InputEvent::parse(&event(1, 116, 1));
        assert_eq!(
            parsed,
            InputEvent {
                kind: 1,
                code: 116,
                value: 1
            }
        );
        assert!(parsed.is_power_press());
    }

    #[test]
    fn detects_power_press_among_sync_events() {
        // What the ACPI button sends for system_powerdown: press, SYN, release, SYN.
        let mut buf = Vec::new();
        buf.extend_from_slice(&event(EV_KEY, KEY_POWER, 1));
        buf.extend_from_slice(&event(0, 0, 0));
        buf.extend_from_slice(&event(EV_KEY, KEY_POWER, 0));
        buf.extend_from_slice(&event(0, 0, 0));
        assert!(contains_power_press(&buf));
    }

    #[test]
    fn ignores_release_repeat_and_other_keys() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&event(EV_KEY, KEY_POWER, 0));
        buf.extend_from_slice(&event(EV_KEY, KEY_POWER, 2));
        buf.extend_from_slice(&event(EV_KEY, 30, 1));
        // EV_MSC with code 116 must not count.
        buf.extend_from_slice(&event(4, KEY_POWER, 1));
        assert!(!contains_power_press(&buf));
    }

    #[test]
    fn ignores_trailing_partial_event() {
        let whole = event(EV_KEY, KEY_POWER, 1);
        assert!(!contains_power_press(&whole[..EVENT_SIZE - 1]));
    }

    #[test]
    fn reads_key_power_bit_from_bitmap() {
        let mut bits = [0u8; KEY_MAX / 8 + 1];
        assert!(!can_send_power(&bits));
        bits[14] = 1 << 4;
        assert!(can_send_power(&bits));
        assert!(!can_send_power(&bits[..14]));
    }

    #[test]
    fn device_name_stops_at_nul() {
        assert_eq!(device_name(b"Power Button\0garbage"), "Power Button");
        assert_eq!(device_name(b"gpio-keys"), "gpio-keys");
    }

    #[test]
    fn scanning_a_missing_directory_is_not_an_error() {
        let mut buttons = PowerButtons::new("/nonexistent/input");
        assert!(buttons.scan().is_ok());
        assert!(buttons.is_empty());
    }
}
