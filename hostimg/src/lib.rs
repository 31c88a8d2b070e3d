//! The disk image's on-disk contract between `builder` (which writes it) and `init` (which
//! finds, verifies and mounts it): which partitions exist, how they are typed and labelled,
//! where init mounts them, and the boot parameters the UKI's signed command line carries.
//!
//! Layout (GPT, in this order on disk, numbered 1..=5):
//!
//! | # | role | type | content |
//! | - | ---- | ---- | ------- |
//! | 1 | ESP | EFI System | FAT32, `EFI/BOOT/BOOT{X64,AA64}.EFI` (the UKI) |
//! | 2 | payload slot A | ours | erofs, then a dm-verity superblock and hash tree |
//! | 3 | payload slot B | ours | zeros, same size as A (reserved for A/B updates) |
//! | 4 | manifest | ours | the signed image manifest (JSON) and its minisign signature |
//! | 5 | data | DPS `/var` | ext4, read-write, grown to the end of the disk on first boot |
//!
//! The data partition is last so that it can grow into whatever the disk has beyond the image.

pub mod boot_params;
pub mod guid;

pub use boot_params::{BootParams, BootParamsError, VerityParams};
pub use guid::Guid;

/// Sector size the image is laid out in (and what virtio-blk, cloud disks and SD cards show).
pub const SECTOR: u64 = 512;
/// Partitions start on 1 MiB boundaries.
pub const ALIGN: u64 = 1 << 20;
/// dm-verity data and hash block size.
pub const VERITY_BLOCK: u64 = 4096;

/// Where init mounts the verified payload, read-only.
pub const PAYLOAD_MOUNT: &str = "/payload";
/// Where init mounts the data partition, read-write (image store, pod volumes, logs).
pub const DATA_MOUNT: &str = "/var";
/// Name of the device-mapper device init creates over payload slot A.
pub const PAYLOAD_DM_NAME: &str = "hostos-payload";
/// Directory in the payload holding the embedded `.aci` files (and their `.aci.minisig`).
pub const PAYLOAD_IMAGES_DIR: &str = "images";
/// Directory in the initramfs holding the trust store init uses (`root.d/`, `prefix.d/`).
pub const TRUST_PATH: &str = "/etc/hostos/trust";

/// In the initramfs: the pods the builder planned for init (`hostdecl::PodsPlan`, JSON).
pub const PODS_PLAN_PATH: &str = "/etc/hostos/pods.json";
/// In the initramfs: the network plan (`hostdecl::NetworkPlan`, JSON): interfaces, static
/// hosts, and the fetch policy (plain-HTTP prefixes, extra CA certificates).
pub const NETWORK_PLAN_PATH: &str = "/etc/hostos/network.json";
/// On the data partition: the appc image store (blobs, rendered trees).
pub const STORE_DIR: &str = "/var/lib/hostos/store";
/// On the data partition: per pod, `empty` volumes (`<pod>/volumes/<name>`, made afresh at
/// each pod start) and per app the overlay upper and work directories (`<pod>/<app>/`).
pub const POD_STATE_DIR: &str = "/var/lib/hostos/pods";
/// On the data partition: `host` volumes, one directory per declared source name.
pub const VOLUMES_DIR: &str = "/var/lib/hostos/volumes";
/// On the data partition: each app's captured output, `<pod>/<app>.log` and `.log.1`.
pub const POD_LOG_DIR: &str = "/var/log/pods";
/// On /run (tmpfs): per pod, the files init writes for it (`etc/hosts`, `etc/hostname`,
/// `etc/resolv.conf`) and each app's root mount point (`<pod>/<app>/root`).
pub const POD_RUN_DIR: &str = "/run/hostos/pods";
/// On /run: the host's resolv.conf, which init writes from its leases and gives to pods.
pub const RESOLV_CONF_PATH: &str = "/run/hostos/resolv.conf";
/// On /run: the host's hosts file (localhost, the host name, `[[network.host]]`).
pub const HOSTS_PATH: &str = "/run/hostos/hosts";

/// File names inside the manifest partition: a small tar-free format, see `builder`'s
/// manifest module: the partition holds `MANIFEST_MAGIC`, then lengths and the two files.
pub const MANIFEST_FILE: &str = "manifest.json";
pub const MANIFEST_SIG_FILE: &str = "manifest.json.minisig";

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Esp,
    PayloadA,
    PayloadB,
    Manifest,
    Data,
}

impl Role {
    /// Every role, in on-disk order (partition number = index + 1).
    pub const ALL: [Role; 5] = [
        Role::Esp,
        Role::PayloadA,
        Role::PayloadB,
        Role::Manifest,
        Role::Data,
    ];

    /// GPT partition number (1-based).
    pub fn number(self) -> u32 {
        match self {
            Role::Esp => 1,
            Role::PayloadA => 2,
            Role::PayloadB => 3,
            Role::Manifest => 4,
            Role::Data => 5,
        }
    }

    /// The GPT partition name (UTF-16 in the table), also used in messages and the manifest.
    pub fn label(self) -> &'static str {
        match self {
            Role::Esp => "esp",
            Role::PayloadA => "payload-a",
            Role::PayloadB => "payload-b",
            Role::Manifest => "manifest",
            Role::Data => "data",
        }
    }

    /// The partition type GUID. ESP and data use the Discoverable Partitions Specification
    /// types (EFI System; `/var`, which is where init mounts data). The payload is no
    /// filesystem the DPS knows (it is not `/usr`: nothing would boot from it), and the
    /// manifest partition holds no filesystem, so both have types of our own.
    pub fn type_guid(self) -> Guid {
        match self {
            Role::Esp => guid::ESP,
            Role::PayloadA | Role::PayloadB => guid::PAYLOAD,
            Role::Manifest => guid::MANIFEST,
            Role::Data => guid::DPS_VAR,
        }
    }

    pub fn from_label(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.label() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_numbered_in_disk_order_and_labels_round_trip() {
        for (i, r) in Role::ALL.into_iter().enumerate() {
            assert_eq!(r.number() as usize, i + 1);
            assert_eq!(Role::from_label(r.label()), Some(r));
        }
        assert_eq!(
            Role::ALL.last(),
            Some(&Role::Data),
            "data must be last to grow"
        );
    }

    #[test]
    fn type_guids_are_distinct_except_the_two_payload_slots() {
        let mut seen = std::collections::BTreeSet::new();
        for r in Role::ALL {
            if r != Role::PayloadB {
                assert!(seen.insert(r.type_guid().to_string()), "{r}");
            }
        }
        assert_eq!(Role::PayloadA.type_guid(), Role::PayloadB.type_guid());
    }
}
