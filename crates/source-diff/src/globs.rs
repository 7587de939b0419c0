//! A glob set that answers as [`globset::GlobSet`] does, with the commonest glob of a
//! catalogue, `DIR/**` with a literal `DIR`, matched by a lookup of the path's folders.
//!
//! A `GlobSet` matches those with an Aho-Corasick automaton whose construction was most of the
//! config check's cost in a CLI call (and grows with the components); a path's folders are a
//! handful of hash lookups. The equivalence is globset's own: it matches such a glob exactly
//! when its literal prefix `DIR/` starts the path (its prefix strategy).

use std::collections::HashMap;

use globset::{Glob, GlobSet, GlobSetBuilder};

/// Globs numbered in the order they were added, as a `GlobSet` numbers them.
#[derive(Debug, Clone)]
pub(crate) struct Globs {
    /// `DIR/` of each `DIR/**` glob, with the numbers of the globs that are it.
    dirs: HashMap<String, Vec<usize>>,
    /// Every other glob, in a `GlobSet`.
    others: GlobSet,
    /// The number of each glob of `others`.
    other_number: Vec<usize>,
}

/// Collects the globs of a [`Globs`].
pub(crate) struct GlobsBuilder {
    dirs: HashMap<String, Vec<usize>>,
    others: GlobSetBuilder,
    other_number: Vec<usize>,
    count: usize,
}

impl Default for GlobsBuilder {
    fn default() -> Self {
        GlobsBuilder { dirs: HashMap::new(), others: GlobSetBuilder::new(), other_number: Vec::new(), count: 0 }
    }
}

impl GlobsBuilder {
    /// Adds `glob`, compiled from `pattern` by [`pipeline_config::glob`].
    pub(crate) fn add(&mut self, pattern: &str, glob: Glob) {
        match literal_dir(pattern) {
            Some(dir) => self.dirs.entry(dir).or_default().push(self.count),
            None => {
                self.others.add(glob);
                self.other_number.push(self.count);
            }
        }
        self.count += 1;
    }

    /// The set; fails as `GlobSetBuilder::build` does.
    pub(crate) fn build(self) -> Result<Globs, globset::Error> {
        Ok(Globs { dirs: self.dirs, others: self.others.build()?, other_number: self.other_number })
    }
}

/// `DIR/` when `pattern` is `DIR/**` and `DIR` holds no glob syntax (nor an escape); `None`
/// leaves the glob to globset.
fn literal_dir(pattern: &str) -> Option<String> {
    let dir = pattern.strip_suffix("/**")?;
    let literal = !dir.is_empty() && !dir.contains(['*', '?', '[', ']', '{', '}', '\\']);
    literal.then(|| format!("{dir}/"))
}

impl Globs {
    /// Whether any glob matches `path`.
    pub(crate) fn is_match(&self, path: &str) -> bool {
        self.dir_matches(path).next().is_some() || self.others.is_match(path)
    }

    /// The numbers of the globs that match `path`, ascending, each once (as `GlobSet::matches_into`).
    pub(crate) fn matches_into(&self, path: &str, into: &mut Vec<usize>) {
        self.others.matches_into(path, into);
        for number in into.iter_mut() {
            *number = self.other_number[*number];
        }
        for numbers in self.dir_matches(path) {
            into.extend(numbers);
        }
        into.sort_unstable();
        into.dedup();
    }

    /// The numbers of the `DIR/**` globs whose `DIR/` starts `path`: one lookup per folder of it.
    fn dir_matches<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a Vec<usize>> + 'a {
        let dirs = if self.dirs.is_empty() { "" } else { path };
        dirs.match_indices('/').filter_map(move |(end, _)| self.dirs.get(&path[..=end]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every glob, alone and together, answers as globset's own set does.
    #[test]
    fn answers_as_globset() {
        let patterns = [
            "lambda/api/**",
            "lambda/**",
            "cfn/*.yaml",
            "**/*.md",
            "frontend/**/*.md",
            "a\\*/**",
            "./x/**",
            "a b/**",
            "dir/**",
            "dir/**",
            "{x,y}/**",
            "pipeline.toml",
            "d?r/**",
            "lambda/api",
        ];
        let paths = [
            "lambda/api/index.py",
            "lambda/api",
            "lambda/api/",
            "lambda/apix/index.py",
            "lambda/README.md",
            "cfn/a.yaml",
            "cfn/sub/a.yaml",
            "a*/f",
            "ab/f",
            "./x/y",
            "x/y",
            "a b/c d",
            "dir",
            "dir/x/y/z",
            "dir\n/x",
            "dir/x\ny",
            "y/z",
            "pipeline.toml",
            "frontend/src/x.md",
            "dar/f",
            "é/ü/**",
        ];
        let mut ours = GlobsBuilder::default();
        let mut theirs = GlobSetBuilder::new();
        for pattern in patterns {
            let glob = pipeline_config::glob(pattern).unwrap();
            ours.add(pattern, glob.clone());
            theirs.add(glob);
        }
        let (ours, theirs) = (ours.build().unwrap(), theirs.build().unwrap());
        assert!(!ours.dirs.is_empty() && ours.dirs.len() < patterns.len());
        let mut got = vec![99];
        for path in paths {
            ours.matches_into(path, &mut got);
            assert_eq!(got, theirs.matches(path), "{path}");
            assert_eq!(ours.is_match(path), theirs.is_match(path), "{path}");
        }
    }
}
