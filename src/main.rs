//! The `walden` binary: parses arguments, runs one command, and maps the
//! library's error kinds to the exit codes documented in `spec/cli.md`.
//! Everything else lives in the library.

mod cli;

use walden::error::Kind;

/// Exit codes, stable and documented in `spec/cli.md`.
fn exit_code(kind: Kind) -> i32 {
    match kind {
        Kind::NotFound => 1,
        Kind::InvalidInput => 2,
        Kind::WrongPassword => 3,
        Kind::Corrupt => 4,
        Kind::Unavailable => 5,
        Kind::Conflict => 6,
        Kind::Unsupported => 7,
        Kind::Internal => 8,
    }
}

fn main() {
    // PostgreSQL ends recovery at the first restore_command exit from 1 to
    // 125, taking it for the end of the archive, but aborts it above 125:
    // every wal-fetch failure except "not archived" (exit 1) must abort,
    // a panic included.
    let wal_fetch = cli::is_wal_fetch();
    cli::install_panic_hook(wal_fetch, exit_code(Kind::Internal));
    let outcome = cli::main();
    let code = match outcome.result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("walden: error: {e}");
            if outcome.wal_fetch {
                200 + exit_code(e.kind())
            } else {
                exit_code(e.kind())
            }
        }
    };
    std::process::exit(code);
}
