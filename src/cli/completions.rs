//! `walden completions bash|zsh|fish`: a completion script for the shell,
//! generated from the command line's own definition, on standard output.

use clap::{Args, CommandFactory, ValueEnum};

use walden::error::Result;

#[derive(Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    shell: Shell,
}

pub fn run(a: CompletionsArgs) -> Result<i32> {
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = super::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "walden", &mut script);
    super::output::write_stdout(&script)?;
    Ok(0)
}
