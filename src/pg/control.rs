//! What a data directory's own files say about the cluster, for a backup
//! that sees the files but cannot ask the server: the system identifier (the
//! first field of `global/pg_control`, a little-endian u64 in every version
//! since 8.x) and the major version (`PG_VERSION`). The rest of the control
//! file's layout changes between versions and is not read here. Pure.

use crate::error::{Error, Result};

/// The system identifier in `global/pg_control`, as PostgreSQL prints it
/// (`pg_controldata`, `pg_control_system()`): a decimal u64.
pub fn system_identifier(pg_control: &[u8]) -> Result<String> {
    let first: [u8; 8] = pg_control
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            Error::invalid(format!(
                "global/pg_control is {} bytes, too short for a control file",
                pg_control.len()
            ))
        })?;
    let id = u64::from_le_bytes(first);
    if id == 0 {
        return Err(Error::invalid(
            "global/pg_control holds no system identifier (all zeros)",
        ));
    }
    Ok(id.to_string())
}

/// The `server_version_num` of a major version named in `PG_VERSION`
/// (`15` → 150000, `9.6` → 90600). The minor version is not recorded in
/// the data directory, so it is 0.
pub fn version_num(pg_version: &str) -> Result<u32> {
    let v = pg_version.trim();
    let bad = || Error::invalid(format!("PG_VERSION {v:?} is not a PostgreSQL version"));
    let num = |s: &str| -> Result<u32> {
        if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    match v.split_once('.') {
        Some((major, minor)) => {
            let (major, minor) = (num(major)?, num(minor)?);
            if major >= 10 || minor > 99 {
                return Err(bad());
            }
            Ok(major * 10000 + minor * 100)
        }
        None => {
            let major = num(v)?;
            if major < 10 {
                return Err(bad());
            }
            Ok(major * 10000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_system_identifier() {
        let mut control = vec![0u8; 8192];
        control[..8].copy_from_slice(&7710869051781437781u64.to_le_bytes());
        control[8..12].copy_from_slice(&1300u32.to_le_bytes());
        assert_eq!(system_identifier(&control).unwrap(), "7710869051781437781");
        assert!(system_identifier(&control[..7]).is_err());
        assert!(system_identifier(&[0u8; 8192]).is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(version_num("15\n").unwrap(), 150000);
        assert_eq!(version_num("9.6").unwrap(), 90600);
        for bad in ["", "abc", "15.2", "9", "1.2.3", "99999"] {
            assert!(version_num(bad).is_err(), "{bad:?}");
        }
    }
}
