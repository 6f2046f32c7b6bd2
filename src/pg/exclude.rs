//! Which files of a data directory a base backup leaves out, following
//! PostgreSQL's own base backup (`basebackup.c`): directories whose contents
//! are runtime state (the directory itself is kept, empty), files that must
//! not be restored (`postmaster.pid`, an old `backup_label`, …), temporary
//! files and relations, and the non-init forks of unlogged relations, which
//! recovery resets from their init fork anyway. Pure: decides on names.

use std::collections::HashSet;

/// Directories kept but backed up empty, by path relative to the data
/// directory. `pg_wal` is replayed from the archive instead.
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Files left out wherever they are.
const SKIP_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "pg_internal.init",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postmaster.pid",
    "postmaster.opts",
];

/// What to do with one directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Keep,
    Skip,
    /// A directory kept without its contents.
    KeepEmpty,
}

/// Decides for every entry of the directory at `rel_dir` (relative to the
/// data directory, "" for its root); `entries` are (name, is_dir).
pub fn decide(rel_dir: &str, entries: &[(&str, bool)]) -> Vec<Decision> {
    // Unlogged relations: a relfilenode with an `_init` fork. In database
    // directories only (base/<oid>, or pg_tblspc/<oid>/<version>/<oid>).
    let in_db_dir = is_database_dir(rel_dir);
    let unlogged: HashSet<&str> = if in_db_dir {
        entries
            .iter()
            .filter_map(|(n, d)| (!*d).then_some(*n))
            .filter_map(|n| n.strip_suffix("_init"))
            .filter(|stem| is_digits(stem))
            .collect()
    } else {
        HashSet::new()
    };
    entries
        .iter()
        .map(|(name, is_dir)| {
            let path = if rel_dir.is_empty() {
                name.to_string()
            } else {
                format!("{rel_dir}/{name}")
            };
            if name.starts_with("pgsql_tmp") {
                return Decision::Skip;
            }
            if *is_dir {
                return if EMPTY_DIRS.contains(&path.as_str()) {
                    Decision::KeepEmpty
                } else {
                    Decision::Keep
                };
            }
            if SKIP_FILES.contains(name) {
                return Decision::Skip;
            }
            if in_db_dir {
                if is_temp_relation(name) {
                    return Decision::Skip;
                }
                let stem = relfilenode(name);
                if unlogged.contains(stem) && !name.ends_with("_init") {
                    return Decision::Skip;
                }
            }
            Decision::Keep
        })
        .collect()
}

/// Whether the file at `rel_path` (relative to the data directory) is left
/// out by name alone: everything [`decide`] leaves out but the non-init
/// forks of unlogged relations, which take the directory's listing to see.
/// For a reader that meets files one at a time (a tar stream).
pub fn skips_file(rel_path: &str) -> bool {
    let (dir, name) = rel_path.rsplit_once('/').unwrap_or(("", rel_path));
    if rel_path.split('/').any(|p| p.starts_with("pgsql_tmp")) {
        return true;
    }
    let mut at = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(part);
        if EMPTY_DIRS.contains(&at.as_str()) {
            return true;
        }
    }
    SKIP_FILES.contains(&name) || (is_database_dir(dir) && is_temp_relation(name))
}

/// Whether the file at `rel_path` (relative to the data directory) is a
/// relation file: `base/<db>/…`, `global/…` or a tablespace's database
/// directory, named `<relfilenode>[_fsm|_vm|_init][.<segment>]`. These are
/// arrays of 8 KiB pages and are best cut at page boundaries.
pub fn is_relation_file(rel_path: &str) -> bool {
    super::summary::relation_file(rel_path).is_some()
}

/// Whether `rel_path` is a tablespace's entry in `pg_tblspc` (a symlink to
/// the tablespace's directory, whose contents a base backup includes).
pub fn is_tablespace_link(rel_path: &str) -> bool {
    rel_path.strip_prefix("pg_tblspc/").is_some_and(is_digits)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `base/<oid>` or `pg_tblspc/<oid>/<PG_version_catversion>/<oid>`.
fn is_database_dir(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["base", db] => is_digits(db),
        ["pg_tblspc", ts, _, db] => is_digits(ts) && is_digits(db),
        _ => false,
    }
}

/// The relfilenode a relation file belongs to: `16384`, `16384.1`,
/// `16384_fsm`, `16384_vm.2` all give `16384`.
fn relfilenode(name: &str) -> &str {
    let end = name.find(['.', '_']).unwrap_or(name.len());
    &name[..end]
}

/// Temporary relations: `t<backend>_<relfilenode>[_fork][.segment]`.
fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, rel)) = rest.split_once('_') else {
        return false;
    };
    is_digits(backend) && is_digits(relfilenode(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_postgres_exclusions() {
        let root = decide(
            "",
            &[
                ("pg_wal", true),
                ("base", true),
                ("postmaster.pid", false),
                ("backup_label", false),
                ("PG_VERSION", false),
                ("pg_replslot", true),
                ("postgresql.conf", false),
            ],
        );
        use Decision::*;
        assert_eq!(
            root,
            vec![KeepEmpty, Keep, Skip, Skip, Keep, KeepEmpty, Keep]
        );
        let db = decide(
            "base/16384",
            &[
                ("16385", false),
                ("16385_init", false),
                ("16385_fsm", false),
                ("16390", false),
                ("16390.1", false),
                ("t3_16400", false),
                ("pg_internal.init", false),
                ("pgsql_tmp", true),
            ],
        );
        assert_eq!(db, vec![Skip, Keep, Skip, Keep, Keep, Skip, Skip, Skip]);
        // Outside database directories the relation rules do not apply.
        assert_eq!(decide("global", &[("t3_16400", false)]), vec![Keep]);
    }

    #[test]
    fn skips_files_by_name_alone() {
        for yes in [
            "postmaster.pid",
            "pg_stat_tmp/global.stat",
            "pg_replslot/s/state",
            "base/1/pgsql_tmp/pgsql_tmp123.0",
            "base/16384/t3_16400",
            "backup_label",
        ] {
            assert!(skips_file(yes), "{yes}");
        }
        for no in [
            "base/1/1259",
            "global/pg_control",
            "PG_VERSION",
            "pg_xact/0000",
        ] {
            assert!(!skips_file(no), "{no}");
        }
    }

    #[test]
    fn recognizes_relation_files() {
        for yes in [
            "base/1/1259",
            "base/16384/16385.1",
            "base/5/2619_fsm",
            "global/1262_vm",
            "pg_tblspc/16390/PG_15_202209061/16384/16391",
        ] {
            assert!(is_relation_file(yes), "{yes}");
        }
        for no in [
            "PG_VERSION",
            "base/1/PG_VERSION",
            "global/pg_control",
            "pg_xact/0000",
            "base/1/pg_filenode.map",
            "base/16384/16385.x",
        ] {
            assert!(!is_relation_file(no), "{no}");
        }
    }
}
