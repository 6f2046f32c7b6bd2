//! `walden man`: the manual page (roff, section 1), generated from the
//! command line's own definition, on standard output: the command, its
//! global options and one section per subcommand.

use clap::CommandFactory;

use walden::error::{Error, Result};

pub fn run() -> Result<i32> {
    let cmd = super::Cli::command();
    let mut out = Vec::new();
    let write = |e: std::io::Error| Error::internal(format!("writing the manual page: {e}"));
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut out).map_err(write)?;
    man.render_name_section(&mut out).map_err(write)?;
    man.render_synopsis_section(&mut out).map_err(write)?;
    man.render_description_section(&mut out).map_err(write)?;
    man.render_options_section(&mut out).map_err(write)?;
    // One section per visible subcommand, with its own options.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("walden {}", sub.get_name());
        let sub = sub.clone().bin_name(name);
        let page = clap_mangen::Man::new(sub.clone());
        let mut part = Vec::new();
        page.render_synopsis_section(&mut part).map_err(write)?;
        page.render_description_section(&mut part).map_err(write)?;
        page.render_options_section(&mut part).map_err(write)?;
        let text = String::from_utf8_lossy(&part)
            .replace(
                ".SH SYNOPSIS",
                &format!(".SH \"{}\"", sub.get_name().to_uppercase()),
            )
            .replace(".SH DESCRIPTION\n", ".PP\n")
            .replace(".SH OPTIONS\n", ".PP\n");
        out.extend_from_slice(text.as_bytes());
    }
    man.render_version_section(&mut out).map_err(write)?;
    super::output::write_stdout(&out)?;
    Ok(0)
}
