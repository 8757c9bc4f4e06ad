//! The man page and shell completions that the packages install: generated from the clap
//! definitions and committed under `share/`, so packaging needs no extra build step. This test
//! fails when they are stale; `EXTDROP_BLESS=1 cargo test --tests packaging` rewrites them.

use std::path::Path;
use std::process::Command;

use clap::CommandFactory;

/// Compares `generated` with the committed file `rel`, or rewrites it when blessing.
fn current(rel: &str, generated: &[u8]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if std::env::var_os("EXTDROP_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, generated).expect("write");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{rel} is stale: run `EXTDROP_BLESS=1 cargo test --tests packaging` and commit it"
    );
}

#[test]
fn the_committed_completions_are_what_extdrop_completions_prints() {
    for (shell, rel) in [
        ("bash", "share/completions/extdrop.bash"),
        ("zsh", "share/completions/_extdrop"),
        ("fish", "share/completions/extdrop.fish"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_extdrop"))
            .args(["completions", shell])
            .env_remove("EXTDROP_CONFIG")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(!out.stdout.is_empty(), "{shell}");
        // Every subcommand is completed.
        let text = String::from_utf8_lossy(&out.stdout);
        for name in [
            "run", "once", "check", "explain", "status", "retry", "upload", "versions", "demo",
        ] {
            assert!(text.contains(name), "{shell} lacks {name}");
        }
        current(rel, &out.stdout);
    }
}

/// The man pages: `extdrop.1`, and one `extdrop-SUBCOMMAND.1` per subcommand (as git does),
/// which the main page lists under SUBCOMMANDS.
fn man_pages() -> Vec<(String, Vec<u8>)> {
    let mut cli = extdrop::cli::Cli::command();
    cli.build();
    let mut pages = Vec::new();
    let mut render = |command: clap::Command| {
        let name = command
            .get_display_name()
            .unwrap_or_else(|| command.get_name())
            .to_owned();
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .expect("render");
        pages.push((format!("{name}.1"), page));
    };
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        render(sub.clone());
    }
    render(cli);
    pages
}

#[test]
fn the_committed_man_pages_are_generated_from_the_command_line() {
    let pages = man_pages();
    let main = &pages.last().expect("the main page").1;
    let text = String::from_utf8_lossy(main);
    for needle in [
        "\\-\\-config",
        "EXTDROP_CONFIG",
        "extdrop\\-demo(1)",
        "extdrop\\-completions(1)",
    ] {
        assert!(
            text.contains(needle),
            "the man page lacks {needle}:\n{text}"
        );
    }
    let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
    assert!(names.contains(&"extdrop-run.1"), "{names:?}");
    for (name, page) in &pages {
        current(&format!("share/man/{name}"), page);
    }
    // No page is left behind for a subcommand that is gone.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("share/man");
    for entry in std::fs::read_dir(dir).expect("share/man") {
        let file = entry.expect("entry").file_name();
        let file = file.to_string_lossy();
        assert!(
            names.contains(&file.as_ref()),
            "share/man/{file} is not generated any more"
        );
    }
}

#[test]
fn an_unknown_shell_is_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_extdrop"))
        .args(["completions", "tcsh"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bash") && err.contains("fish"), "{err}");
}
