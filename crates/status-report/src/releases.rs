//! `status-report releases --env E`: an environment's releases (pure rendering).

use run_state::Release;

/// One line per release, oldest first, with what each holds; the one running now marked `*`.
pub fn render(env: &str, releases: &[Release]) -> String {
    if releases.is_empty() {
        return format!("no release of `{env}` recorded yet; a deploy that passes records one\n");
    }
    let mut out = String::new();
    for (index, release) in releases.iter().enumerate() {
        let mark = if index + 1 == releases.len() { '*' } else { ' ' };
        out.push_str(&format!("{mark} {}\n", release.line()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_release_is_marked_and_an_empty_list_says_how_one_is_made() {
        assert!(render("dev", &[]).contains("a deploy that passes records one"));
        let release = |id: &str| Release {
            id: id.into(),
            env: "dev".into(),
            commit: "0123456789abcdef".into(),
            at: None,
            rollback: None,
            artifact_bucket: None,
            stacks: Default::default(),
            functions: Default::default(),
            site: None,
        };
        let text = render("dev", &[release("r1"), release("r2")]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("  r1") && lines[1].starts_with("* r2"), "{text}");
        assert!(lines[1].contains("commit 0123456789ab "), "{text}");
    }
}
