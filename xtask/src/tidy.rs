//! The repository's own rules, checked by `cargo xtask test` (as rust-analyzer's tidy does):
//! libraries never print, run-folder file names live in the run-state crate only, every stage
//! binary goes through the stage context, every crate documents its public items, each
//! library builds without its binary's dependencies, and the crate graph keeps the layers
//! ARCHITECTURE.md lists.

use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// Dependencies only a binary needs: a library's default build must not pull them in.
pub const BINARY_ONLY: &[&str] = &["clap", "anyhow", "ctrlc", "comfy-table", "indicatif"];

/// The library crates (every crate under `crates/` but the test helpers).
pub fn library_crates(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root.join("crates"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().join("src/lib.rs").is_file() && name != "test-support" {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Each library's dependency tree without features must hold none of [`BINARY_ONLY`].
pub fn check_light_libraries(root: &Path, cargo: &std::ffi::OsStr) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for name in library_crates(root)? {
        let out = Command::new(cargo)
            .current_dir(root)
            .args(["tree", "--quiet", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p", &name])
            .output()
            .context("running cargo tree")?;
        if !out.status.success() {
            bail!("cargo tree -p {name}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        for line in tree.lines() {
            let package = line.split_whitespace().next().unwrap_or("");
            if BINARY_ONLY.contains(&package) {
                problems.push(format!("{name} depends on {package} without the `cli` feature"));
            }
        }
    }
    problems.sort();
    problems.dedup();
    if !problems.is_empty() {
        bail!("libraries must build without their binaries' dependencies: {}", problems.join("; "));
    }
    Ok(())
}

/// The crate layers: ARCHITECTURE.md's table between `<!-- layers:begin -->` and
/// `<!-- layers:end -->`, each crate with the workspace crates it may depend on (`any` for xtask).
pub fn allowed_layers(architecture: &str) -> anyhow::Result<std::collections::BTreeMap<String, Option<Vec<String>>>> {
    let begin = architecture.find("<!-- layers:begin -->").context("ARCHITECTURE.md has no `<!-- layers:begin -->`")?;
    let end = architecture.find("<!-- layers:end -->").context("ARCHITECTURE.md has no `<!-- layers:end -->`")?;
    let mut layers = std::collections::BTreeMap::new();
    for line in architecture[begin..end].lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(|c| c.trim().trim_matches('`')).collect();
        let [name, allowed] = cells[..] else { bail!("ARCHITECTURE.md layers: `{line}` is not `| crate | allowed |`") };
        if name == "crate" || name.starts_with('-') {
            continue;
        }
        let allowed = match allowed {
            "any" => None,
            "none" => Some(Vec::new()),
            list => Some(list.split(',').map(|c| c.trim().trim_matches('`').to_string()).collect()),
        };
        if layers.insert(name.to_string(), allowed).is_some() {
            bail!("ARCHITECTURE.md layers: `{name}` is listed twice");
        }
    }
    Ok(layers)
}

/// Each workspace crate's normal dependencies on other workspace crates, from `cargo metadata`.
pub fn workspace_dependencies(
    root: &Path,
    cargo: &std::ffi::OsStr,
) -> anyhow::Result<std::collections::BTreeMap<String, Vec<String>>> {
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading cargo metadata's JSON")?;
    let packages = metadata["packages"].as_array().context("cargo metadata has no packages")?;
    let names: std::collections::BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut graph = std::collections::BTreeMap::new();
    for package in packages {
        let name = package["name"].as_str().context("a package without a name")?;
        let mut deps: Vec<String> = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            // `kind` is null for normal dependencies, "dev" or "build" otherwise.
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| names.contains(d) && *d != name)
            .map(str::to_string)
            .collect();
        deps.sort();
        deps.dedup();
        graph.insert(name.to_string(), deps);
    }
    Ok(graph)
}

/// What breaks the layers: a crate not in the table, a table row for no crate, or a dependency
/// the table does not allow (optional ones included: a feature must not cross a layer either).
pub fn layer_violations(
    layers: &std::collections::BTreeMap<String, Option<Vec<String>>>,
    graph: &std::collections::BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, deps) in graph {
        match layers.get(name) {
            None => problems.push(format!("crate `{name}` has no row in ARCHITECTURE.md's layers table; add one")),
            Some(None) => {}
            Some(Some(allowed)) => {
                for dep in deps.iter().filter(|d| !allowed.contains(d)) {
                    problems.push(format!(
                        "`{name}` depends on `{dep}`, which ARCHITECTURE.md's layers table does not allow; \
                         move what it needs lower or change the table with a reason"
                    ));
                }
            }
        }
    }
    for name in layers.keys().filter(|n| !graph.contains_key(*n)) {
        problems.push(format!("ARCHITECTURE.md's layers table lists `{name}`, which is not a workspace crate"));
    }
    problems
}

/// The crate graph against ARCHITECTURE.md's layers table.
pub fn check_layers(root: &Path, cargo: &std::ffi::OsStr) -> anyhow::Result<()> {
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).context("reading ARCHITECTURE.md")?;
    let problems = layer_violations(&allowed_layers(&architecture)?, &workspace_dependencies(root, cargo)?);
    if !problems.is_empty() {
        bail!("the crate graph breaks its layers: {}", problems.join("; "));
    }
    Ok(())
}

/// Every `.rs` file under `dir`.
#[cfg(test)]
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        crate::workspace_root()
    }

    /// Library source files: `crates/*/src/**` outside `src/bin/`, and the binaries' shared
    /// `cli` module, which only binaries use.
    fn library_sources() -> Vec<PathBuf> {
        let root = root();
        let mut files = Vec::new();
        for name in library_crates(&root).unwrap() {
            for file in rust_files(&root.join("crates").join(&name).join("src")) {
                let relative = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                if !relative.contains("/src/bin/") && !relative.ends_with("run-state/src/cli.rs") {
                    files.push(file);
                }
            }
        }
        assert!(files.len() > 20, "found only {} library files: is the layout what tidy expects?", files.len());
        files
    }

    #[test]
    fn the_crate_graph_keeps_the_layers_architecture_md_lists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        check_layers(&root(), &cargo).unwrap();
    }

    #[test]
    fn a_dependency_across_a_layer_is_named_with_the_fix() {
        let table = "<!-- layers:begin -->\n| crate | may depend on |\n|---|---|\n| `low` | none |\n\
                     | `mid` | `low` |\n| `top` | any |\n| `gone` | none |\n<!-- layers:end -->";
        let layers = allowed_layers(table).unwrap();
        let graph = [("low", vec!["mid"]), ("mid", vec!["low"]), ("top", vec!["low", "mid"]), ("new", vec![])]
            .into_iter()
            .map(|(n, d)| (n.to_string(), d.into_iter().map(str::to_string).collect()))
            .collect();
        let problems = layer_violations(&layers, &graph);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("`low` depends on `mid`, which ARCHITECTURE.md's layers table does not allow"));
        assert!(problems[1].starts_with("crate `new` has no row"));
        assert!(problems[2].contains("lists `gone`, which is not a workspace crate"));
    }

    /// A file's Rust outside `#[cfg(test)]` items, parsed.
    fn parsed(path: &Path) -> syn::File {
        let text = std::fs::read_to_string(path).unwrap();
        let mut file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        file.items.retain(|item| !is_test_only(item));
        file
    }

    fn is_test_only(item: &syn::Item) -> bool {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Impl(i) => &i.attrs,
            _ => return false,
        };
        attrs.iter().any(|a| {
            a.path().is_ident("cfg") && matches!(&a.meta, syn::Meta::List(list) if list.tokens.to_string() == "test")
        })
    }

    use syn::visit::Visit;

    /// What a file calls and writes: macro names, string literals, method names, function paths
    /// and the types it names.
    #[derive(Default)]
    struct Seen {
        macros: Vec<(String, usize)>,
        strings: Vec<(String, usize)>,
        methods: Vec<String>,
        calls: Vec<String>,
        types: Vec<String>,
    }

    impl<'ast> Visit<'ast> for Seen {
        fn visit_macro(&mut self, mac: &'ast syn::Macro) {
            let name = mac.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
            self.macros.push((name, mac.path.segments.first().map_or(0, |s| s.ident.span().start().line)));
            // A macro's arguments are tokens: read them as expressions where they are (format
            // macros, vec!), so the literals and calls among them are seen too.
            let comma_separated = syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
            if let Ok(args) = mac.parse_body_with(comma_separated) {
                for arg in &args {
                    self.visit_expr(arg);
                }
            }
        }
        fn visit_lit_str(&mut self, lit: &'ast syn::LitStr) {
            self.strings.push((lit.value(), lit.span().start().line));
        }
        fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
            self.methods.push(call.method.to_string());
            syn::visit::visit_expr_method_call(self, call);
        }
        fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
            if let syn::Expr::Path(path) = &*call.func {
                let names: Vec<String> = path.path.segments.iter().map(|s| s.ident.to_string()).collect();
                self.calls.push(names.join("::"));
            }
            syn::visit::visit_expr_call(self, call);
        }
        fn visit_type_path(&mut self, ty: &'ast syn::TypePath) {
            if let Some(last) = ty.path.segments.last() {
                self.types.push(last.ident.to_string());
            }
            syn::visit::visit_type_path(self, ty);
        }
    }

    fn seen(path: &Path) -> Seen {
        let mut seen = Seen::default();
        seen.visit_file(&parsed(path));
        seen
    }

    #[test]
    fn libraries_never_print() {
        let mut offenders = Vec::new();
        for file in library_sources() {
            for (name, line) in seen(&file).macros {
                if ["println", "eprintln", "print", "eprint", "dbg"].contains(&name.as_str()) {
                    offenders.push(format!("{}:{line}: {name}!", file.display()));
                }
            }
        }
        assert!(offenders.is_empty(), "libraries return values and report events; they never print: {offenders:#?}");
    }

    #[test]
    fn the_tidy_reader_sees_what_it_looks_for() {
        // The checks below are only as good as the reader: a print in a format macro's
        // arguments, a file name in a literal and a call path must all be seen.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("probe.rs");
        std::fs::write(
            &file,
            "fn f() { let x = format!(\"{}\", \"diff.json\"); println!(\"hi\"); run_state::cli::main(g); x.context()?; }\n\
             struct A { s: StageArgs }\n#[cfg(test)]\nmod tests { fn t() { eprintln!(\"fine in tests\"); } }\n",
        )
        .unwrap();
        let seen = seen(&file);
        assert_eq!(seen.macros.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(), ["format", "println"]);
        assert!(seen.strings.iter().any(|(s, _)| s == "diff.json"), "{:?}", seen.strings);
        assert!(seen.calls.contains(&"run_state::cli::main".to_string()), "{:?}", seen.calls);
        assert!(seen.methods.contains(&"context".to_string()));
        assert!(seen.types.contains(&"StageArgs".to_string()));
    }

    #[test]
    fn run_folder_file_names_live_in_run_state_only() {
        let root = root();
        let mut files: Vec<PathBuf> = rust_files(&root.join("crates"))
            .into_iter()
            .filter(|f| !f.starts_with(root.join("crates/run-state")) && f.components().any(|c| c.as_os_str() == "src"))
            .collect();
        files.extend(rust_files(&root.join("xtask/src")));
        let names: Vec<String> = run_state::RunFile::ALL.iter().map(|f| f.file_name().to_string()).collect();
        let mut offenders = Vec::new();
        for file in &files {
            for (text, line) in seen(file).strings {
                if names.contains(&text) || text == "LATEST" || text.starts_with("runs/") {
                    offenders.push(format!("{}:{line}: {text:?}", file.display()));
                }
            }
        }
        assert!(offenders.is_empty(), "name run-folder files through run_state::RunFile: {offenders:#?}");
    }

    #[test]
    fn every_stage_binary_goes_through_the_stage_context() {
        let root = root();
        let mut binaries = Vec::new();
        for name in library_crates(&root).unwrap() {
            binaries.extend(rust_files(&root.join("crates").join(&name).join("src/bin")));
        }
        assert!(binaries.len() >= 5, "expected the five stage binaries, found {binaries:?}");
        for binary in binaries {
            let seen = seen(&binary);
            let main = parsed(&binary).items.into_iter().find_map(|item| match item {
                syn::Item::Fn(f) if f.sig.ident == "main" => Some(f),
                _ => None,
            });
            let mut in_main = Seen::default();
            if let Some(main) = &main {
                in_main.visit_item_fn(main);
            }
            assert!(
                seen.types.iter().any(|t| t == "StageArgs")
                    && seen.methods.iter().any(|m| m == "context" || m == "context_on")
                    && in_main
                        .calls
                        .iter()
                        .any(|c| c == "run_state::cli::main" || c == "run_state::cli::main_with_code"),
                "{} must take StageArgs, build the stage context and end main through run_state::cli::main (or main_with_code)",
                binary.display()
            );
            // source-diff begins the run (its verdict is the diff) and status-report reads and
            // renders; every other stage returns a `StageOutcome` and exits with its code.
            let not_a_stage = ["source-diff.rs", "status-report.rs"].iter().any(|n| binary.ends_with(n));
            assert!(
                not_a_stage || seen.methods.iter().any(|m| m == "exit_code"),
                "{} must exit with its outcome's `StageOutcome::exit_code()`",
                binary.display()
            );
        }
    }

    #[test]
    fn every_crate_documents_its_public_items_and_uses_the_workspace_lints() {
        let root = root();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("missing_docs = \"warn\""), "the workspace must warn on missing docs");
        let mut crates: Vec<PathBuf> =
            library_crates(&root).unwrap().iter().map(|n| root.join("crates").join(n)).collect();
        crates.push(root.join("crates/test-support"));
        crates.push(root.join("xtask"));
        for dir in crates {
            let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            assert!(
                text.contains("[lints]\nworkspace = true"),
                "{} must use the workspace lints (missing_docs, no print)",
                dir.display()
            );
            let lib = dir.join("src/lib.rs");
            if lib.is_file() && !dir.ends_with("test-support") {
                let code = std::fs::read_to_string(&lib).unwrap();
                assert!(code.starts_with("//!"), "{} must open with crate documentation", lib.display());
                assert!(code.contains("```"), "{} must hold a compiled doc example", lib.display());
            }
        }
    }

    /// The longest a function may be, from its `fn` line to its closing brace: past it, a
    /// function is split where a name explains each part (plan vs apply, one stack vs watching it).
    const LONGEST_FUNCTION: usize = 80;

    /// Every function and method of a file outside `#[cfg(test)]` items, nested ones included:
    /// its name, first line and length in lines.
    fn function_lengths(path: &Path) -> Vec<(String, usize, usize)> {
        #[derive(Default)]
        struct Lengths(Vec<(String, usize, usize)>);
        impl Lengths {
            fn add(&mut self, name: &syn::Ident, sig: &syn::Signature, block: &syn::Block) {
                let (first, last) = (sig.fn_token.span.start().line, block.brace_token.span.close().end().line);
                self.0.push((name.to_string(), first, last + 1 - first));
            }
        }
        impl<'ast> Visit<'ast> for Lengths {
            fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
                self.add(&f.sig.ident, &f.sig, &f.block);
                syn::visit::visit_item_fn(self, f);
            }
            fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
                self.add(&f.sig.ident, &f.sig, &f.block);
                syn::visit::visit_impl_item_fn(self, f);
            }
            fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
                if let Some(block) = &f.default {
                    self.add(&f.sig.ident, &f.sig, block);
                }
                syn::visit::visit_trait_item_fn(self, f);
            }
        }
        let mut lengths = Lengths::default();
        lengths.visit_file(&parsed(path));
        lengths.0
    }

    #[test]
    fn the_length_reader_counts_from_fn_to_the_closing_brace() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("probe.rs");
        let body = "    let x = 1;\n".repeat(5);
        std::fs::write(
            &file,
            format!(
                "/// doc\n#[inline]\nfn short() {{\n{body}}}\nimpl A {{\n    fn method(&self) {{\n        fn inner() {{}}\n    }}\n}}\n\
                 #[cfg(test)]\nmod tests {{ fn t() {{}} }}\n"
            ),
        )
        .unwrap();
        let lengths = function_lengths(&file);
        assert_eq!(lengths, [("short".to_string(), 3, 7), ("method".to_string(), 11, 3), ("inner".to_string(), 12, 1)]);
    }

    #[test]
    fn no_function_is_longer_than_eighty_lines() {
        let root = root();
        let mut files = Vec::new();
        for name in library_crates(&root).unwrap() {
            files.extend(rust_files(&root.join("crates").join(&name).join("src")));
        }
        files.extend(rust_files(&root.join("xtask/src")));
        let mut offenders = Vec::new();
        for file in &files {
            for (name, line, length) in function_lengths(file) {
                if length > LONGEST_FUNCTION {
                    let relative = file.strip_prefix(&root).unwrap_or(file).display().to_string();
                    offenders.push(format!("{relative}:{line}: `{name}` is {length} lines"));
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "split these where a name explains each part (at most {LONGEST_FUNCTION} lines): {offenders:#?}"
        );
    }
}
