//! Manual pages and shell completions made from a binary's own command-line definition, so the
//! packages' documentation never drifts from the flags (`<binary> generate ...`).

use std::path::Path;

/// What `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generated {
    /// Manual pages, one per (sub)command, into a directory.
    Man,
    Bash,
    Zsh,
    Fish,
}

/// The hidden `generate` subcommand of both binaries.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[arg(value_enum)]
    pub what: Generated,
    /// Directory for the manual pages (default: the current one).
    pub dir: Option<std::path::PathBuf>,
}

impl GenerateArgs {
    /// Writes what was asked for `cmd`.
    pub fn run(&self, cmd: clap::Command) -> std::io::Result<()> {
        generate(cmd, self.what, self.dir.as_deref())
    }
}

/// Writes manual pages into `dir` (default: the current one), or a completion script to
/// stdout.
pub fn generate(
    mut cmd: clap::Command,
    what: Generated,
    dir: Option<&Path>,
) -> std::io::Result<()> {
    use clap_complete::Shell;
    let name = cmd.get_name().to_owned();
    let shell = match what {
        Generated::Man => {
            let dir = dir.unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            return clap_mangen::generate_to(cmd, dir);
        }
        Generated::Bash => Shell::Bash,
        Generated::Zsh => Shell::Zsh,
        Generated::Fish => Shell::Fish,
    };
    // Into a buffer first: the library panics on a failed write (a closed pipe), we answer it.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    std::io::Write::write_all(&mut std::io::stdout(), &script)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> clap::Command {
        clap::Command::new("demo")
            .about("A demo")
            .subcommand(
                clap::Command::new("run")
                    .about("Run it")
                    .arg(clap::arg!(--fast "Go fast")),
            )
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn man_pages_cover_every_visible_subcommand() {
        let dir = std::env::temp_dir().join(format!("axon-man-{}", std::process::id()));
        generate(cmd(), Generated::Man, Some(&dir)).expect("man");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["demo-run.1", "demo.1"]);
        let page = std::fs::read_to_string(dir.join("demo-run.1")).expect("page");
        assert!(page.contains("fast"), "{page}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
