//! Mutated and random pipeline files never make the loader panic; they validate or they
//! produce located diagnostics.

use envelope_runner::pipeline::{self, Sources, diagnostic::SourceFile};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn compile_text(text: &str) {
    let sources = Sources {
        pipeline: SourceFile::new("pipelines/fuzz.yaml", text),
        defaults: None,
        buildspecs: BTreeMap::new(),
        project_root: ".".into(),
    };
    if let Err(diagnostics) = pipeline::compile(&sources) {
        assert!(!diagnostics.is_empty());
        // Rendering must not panic either, whatever the positions.
        let _ = diagnostics.render(false);
    }
}

fn seed() -> String {
    std::fs::read_to_string(crate::workspace_root().join("pipelines/api.yaml")).unwrap()
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    Replace(usize, char),
    Swap(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop::sample::select(vec![
        ":",
        "-",
        " ",
        "\n",
        "  ",
        "[",
        "]",
        "{",
        "}",
        "\"",
        "'",
        "${",
        "}",
        "&a",
        "*a",
        "<<: *a",
        "!!str",
        "#",
        "${build.digest}",
        "${nope}",
        "stages:",
        "build:",
        "\t",
        "\u{feff}",
        "ünï",
        "99999999999999999999",
    ]);
    prop_oneof![
        (0usize..2000, 1usize..40).prop_map(|(at, len)| Mutation::Delete(at, len)),
        (0usize..2000, token).prop_map(|(at, text)| Mutation::Insert(at, text.to_string())),
        (0usize..2000, any::<char>()).prop_map(|(at, c)| Mutation::Replace(at, c)),
        (0usize..2000, 0usize..2000).prop_map(|(a, b)| Mutation::Swap(a, b)),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for mutation in mutations {
        let len = chars.len().max(1);
        match mutation {
            Mutation::Delete(at, count) => {
                let start = at % len;
                let end = (start + count).min(chars.len());
                if start < end {
                    chars.drain(start..end);
                }
            }
            Mutation::Insert(at, text) => {
                let at = (at % len).min(chars.len());
                for (offset, c) in text.chars().enumerate() {
                    chars.insert(at + offset, c);
                }
            }
            Mutation::Replace(at, c) => {
                if !chars.is_empty() {
                    let at = at % chars.len();
                    chars[at] = *c;
                }
            }
            Mutation::Swap(a, b) => {
                if !chars.is_empty() {
                    let (a, b) = (a % chars.len(), b % chars.len());
                    chars.swap(a, b);
                }
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, .. ProptestConfig::default() })]

    #[test]
    fn mutated_pipelines_never_panic(mutations in prop::collection::vec(mutation(), 1..8)) {
        compile_text(&apply(&seed(), &mutations));
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        compile_text(&text);
    }
}

#[test]
fn alias_bombs_are_refused_not_expanded() {
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..12 {
        let previous = (b'a' + level - 1) as char;
        let name = (b'a' + level) as char;
        text.push_str(&format!("{name}: &{name} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"));
    }
    compile_text(&text);
}
