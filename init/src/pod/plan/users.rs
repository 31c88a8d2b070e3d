//! `user` and `group` resolved as appc says: the image's /etc/passwd and /etc/group first, then
//! a number, then the owner of an absolute path inside the image.

use super::{PlanError, RootFiles};

/// One line of /etc/passwd: name, uid, gid, home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One line of /etc/group: name, gid, members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: (*f.first()?).to_owned(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).map_or_else(String::new, |h| (*h).to_owned()),
            })
        })
        .collect()
}

pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: (*f.first()?).to_owned(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Who the app runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The passwd entry's name and home, when the user was found by name or uid there.
    pub name: Option<String>,
    pub home: Option<String>,
}

/// Resolves `user` and `group` of app `who` against the image's files.
pub fn resolve(
    who: &str,
    user: &str,
    group: &str,
    supplementary: &[u32],
    files: &mut dyn RootFiles,
) -> Result<Resolved, PlanError> {
    let read = |files: &mut dyn RootFiles, path: &str| -> Result<String, PlanError> {
        match files.read(path) {
            Ok(Some(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Ok(None) => Ok(String::new()),
            Err(source) => Err(PlanError::ReadImageFile {
                who: who.to_owned(),
                path: path.to_owned(),
                source,
            }),
        }
    };
    let passwd = parse_passwd(&read(files, "/etc/passwd")?);
    let groups = parse_group(&read(files, "/etc/group")?);
    let bad = |field: &'static str, value: &str, db: &str| PlanError::User {
        who: who.to_owned(),
        field,
        value: value.to_owned(),
        reason: format!(
            "not in {db} of the image, not a number, and not an absolute path in the image"
        ),
    };
    let by_path = |files: &mut dyn RootFiles, field: &'static str, value: &str| {
        if !value.starts_with('/') {
            return Ok(None);
        }
        files
            .owner(value)
            .map_err(|source| PlanError::ReadImageFile {
                who: who.to_owned(),
                path: value.to_owned(),
                source,
            })?
            .map(Some)
            .ok_or_else(|| PlanError::User {
                who: who.to_owned(),
                field,
                value: value.to_owned(),
                reason: "no such file in the image".into(),
            })
    };
    let entry = passwd.iter().find(|p| p.name == user);
    let uid = match (entry, user.parse::<u32>()) {
        (Some(p), _) => p.uid,
        (None, Ok(n)) => n,
        (None, Err(_)) => match by_path(files, "user", user)? {
            Some((uid, _)) => uid,
            None => return Err(bad("user", user, "/etc/passwd")),
        },
    };
    let gid = match (
        groups.iter().find(|g| g.name == group),
        group.parse::<u32>(),
    ) {
        (Some(g), _) => g.gid,
        (None, Ok(n)) => n,
        (None, Err(_)) => match by_path(files, "group", group)? {
            Some((_, gid)) => gid,
            None => return Err(bad("group", group, "/etc/group")),
        },
    };
    let known = entry.or_else(|| passwd.iter().find(|p| p.uid == uid));
    let mut all = Vec::new();
    if let Some(p) = known {
        for g in &groups {
            if g.members.contains(&p.name) && !all.contains(&g.gid) {
                all.push(g.gid);
            }
        }
    }
    for g in supplementary {
        if !all.contains(g) {
            all.push(*g);
        }
    }
    Ok(Resolved {
        uid,
        gid,
        groups: all,
        name: known.map(|p| p.name.clone()),
        home: known.map(|p| p.home.clone()).filter(|h| !h.is_empty()),
    })
}
