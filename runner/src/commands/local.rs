//! What `run --local` takes from the machine beside the pipeline, read and checked before the
//! run is created: the working tree's stand-in for `${release.tag}` (`local-<short sha>`),
//! build secrets given with `--secret ID=env:NAME|file:PATH` and variables from `--env-file`.
//! A mistake stops the command with a message naming the flag (exit code `INVALID_INPUT`);
//! a secret's value is never part of a message.

use super::env_file;
use crate::exec::driver::local_head;
use crate::pipeline::CompiledPipeline;
use crate::pipeline::model::Stage;
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The stand-in when the working tree is not a git repository (or has no commit yet).
pub(super) const UNVERSIONED: &str = "local-unversioned";

/// What `${release.tag}` reads in a `--local` run of no release: `local-<short sha>` of the
/// working tree's HEAD, `local-<short sha>-dirty` when tracked files have uncommitted changes
/// (untracked files, such as the run store under `.envelope/`, do not count), or
/// [`UNVERSIONED`] outside git.
pub(super) fn stand_in_tag(tree: &Path) -> String {
    let (Some(sha), Ok(repository)) = (local_head(tree), git2::Repository::discover(tree)) else {
        return UNVERSIONED.to_owned();
    };
    let mut options = git2::StatusOptions::new();
    options.include_untracked(false).include_ignored(false);
    let dirty = repository
        .statuses(Some(&mut options))
        .is_ok_and(|statuses| !statuses.is_empty());
    format!("local-{}{}", &sha[..7], if dirty { "-dirty" } else { "" })
}

/// The `--secret` values by id, read now. Each id must be one a build stage of `compiled`
/// declares under `secrets:`; its value replaces the source the pipeline names for it.
pub(super) fn secrets(
    written: &[String],
    compiled: &CompiledPipeline,
) -> Result<BTreeMap<String, Secret>, String> {
    let declared: Vec<&str> = compiled
        .pipeline
        .stages
        .iter()
        .filter_map(|stage| match stage {
            Stage::Build(build) => Some(build.secrets.iter().map(|secret| secret.id.as_str())),
            _ => None,
        })
        .flatten()
        .collect();
    let mut values = BTreeMap::new();
    for argument in written {
        let (id, value) = read_secret(argument, &|name| std::env::var(name).ok())?;
        if !declared.contains(&id.as_str()) {
            let known = if declared.is_empty() {
                "it declares none".to_owned()
            } else {
                format!("it declares {}", declared.join(", "))
            };
            return Err(format!(
                "--secret {id}: no build stage of pipeline `{}` declares a secret `{id}` ({known}); use an id from a build stage's `secrets:`",
                compiled.name
            ));
        }
        if values.insert(id.clone(), value).is_some() {
            return Err(format!("--secret {id} is given twice; give each id once"));
        }
    }
    Ok(values)
}

/// One `--secret ID=env:NAME` or `ID=file:PATH`: the id and the value it names, read now.
fn read_secret(
    argument: &str,
    variable: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Secret), String> {
    // Only the id is repeated: what follows `=` may be a value written in the wrong place.
    let syntax = |id: &str| {
        let named = if id.is_empty() {
            String::new()
        } else {
            format!(" {id}")
        };
        format!("--secret{named}: write ID=env:NAME (an environment variable) or ID=file:PATH")
    };
    let (id, source) = match argument.split_once('=') {
        Some((id, source)) if !id.is_empty() => (id, source),
        _ => return Err(syntax("")),
    };
    let value = match source.split_once(':') {
        Some(("env", name)) if !name.is_empty() => variable(name).ok_or_else(|| {
            format!("--secret {id}: environment variable {name} is not set; export it, or pass the value with {id}=file:PATH")
        })?,
        Some(("file", path)) if !path.is_empty() => std::fs::read_to_string(path)
            .map_err(|error| format!("--secret {id}: cannot read file {path}: {error}"))?,
        _ => return Err(syntax(id)),
    };
    Ok((id.to_owned(), Secret::new(value)))
}

/// The values of the variables the pipeline declares in `env:`: this process's environment
/// (else `envelope.yaml`'s default), overridden by the `--env-file` files in order. A variable
/// a file sets that the pipeline does not declare is left out (a template can only read
/// declared ones).
pub(super) fn env(
    files: &[PathBuf],
    compiled: &CompiledPipeline,
) -> Result<BTreeMap<String, String>, String> {
    let mut env = compiled.declared_env();
    for (name, read) in env_file::read_all(files)? {
        if compiled.pipeline.env.contains(&name) {
            env.insert(name, read.value);
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::compile_text;

    fn variables(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cr3t-value".to_owned())
    }

    #[test]
    fn a_secret_is_read_from_a_variable_or_a_file() {
        let (id, value) = read_secret("composer_auth=env:TOKEN", &variables).unwrap();
        assert_eq!(
            (id.as_str(), value.expose()),
            ("composer_auth", "s3cr3t-value")
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        std::fs::write(&file, "{\"token\":1}").unwrap();
        let (_, value) = read_secret(&format!("auth=file:{}", file.display()), &variables).unwrap();
        assert_eq!(value.expose(), "{\"token\":1}");
    }

    #[test]
    fn a_bad_secret_argument_is_named_without_a_value() {
        for (argument, expected) in [
            ("composer_auth", "write ID=env:NAME"),
            ("=env:TOKEN", "write ID=env:NAME"),
            ("id=TOKEN", "write ID=env:NAME"),
            ("id=vault:TOKEN", "write ID=env:NAME"),
            ("id=env:", "--secret id: write ID=env:NAME"),
            ("id=s3cr3t-written-here", "--secret id: write ID=env:NAME"),
            ("s3cr3t-alone", "--secret: write ID=env:NAME"),
            (
                "id=env:MISSING",
                "--secret id: environment variable MISSING is not set",
            ),
            (
                "id=file:/nonexistent/auth",
                "--secret id: cannot read file /nonexistent/auth",
            ),
        ] {
            let error = read_secret(argument, &variables).unwrap_err();
            assert!(error.contains(expected), "{argument}: {error}");
            assert!(!error.contains("s3cr3t"), "{error}");
        }
    }

    #[test]
    fn a_secret_must_be_one_a_build_declares_and_given_once() {
        let compiled = compile_text(
            "source:\n  repository: acme/app\nstages:\n  - build:\n      image: app\n      secrets:\n        - id: composer_auth\n          env: COMPOSER_AUTH\n",
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("value");
        std::fs::write(&file, "v").unwrap();
        let from_file = |ids: &[&str]| -> Vec<String> {
            ids.iter()
                .map(|id| format!("{id}=file:{}", file.display()))
                .collect()
        };
        let read = secrets(&from_file(&["composer_auth"]), &compiled).unwrap();
        assert_eq!(read["composer_auth"].expose(), "v");
        let unknown = secrets(&from_file(&["npm"]), &compiled).unwrap_err();
        assert!(
            unknown.contains("no build stage of pipeline `app` declares a secret `npm`")
                && unknown.contains("it declares composer_auth"),
            "{unknown}"
        );
        let twice = secrets(&from_file(&["composer_auth", "composer_auth"]), &compiled);
        assert!(twice.unwrap_err().contains("given twice"));
    }

    #[test]
    fn env_files_set_only_the_declared_variables() {
        let compiled = compile_text(
            "source:\n  repository: acme/app\nenv: [ENVELOPE_LOCAL_RS_GREETING]\nstages:\n  - build:\n      image: app\n",
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".env");
        std::fs::write(&file, "ENVELOPE_LOCAL_RS_GREETING=hi\nOTHER=x\n").unwrap();
        let env = env(&[file], &compiled).unwrap();
        assert_eq!(
            env,
            BTreeMap::from([("ENVELOPE_LOCAL_RS_GREETING".to_owned(), "hi".to_owned())])
        );
    }

    #[test]
    fn the_stand_in_names_the_commit_and_uncommitted_changes() {
        let outside = tempfile::tempdir().unwrap();
        assert_eq!(stand_in_tag(outside.path()), UNVERSIONED);

        let dir = tempfile::tempdir().unwrap();
        let repository = git2::Repository::init(dir.path()).unwrap();
        assert_eq!(stand_in_tag(dir.path()), UNVERSIONED, "no commit yet");
        std::fs::write(dir.path().join("app.txt"), "one").unwrap();
        let mut index = repository.index().unwrap();
        index.add_path(Path::new("app.txt")).unwrap();
        index.write().unwrap();
        let tree = repository.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = git2::Signature::now("t", "t@example.com").unwrap();
        let commit = repository
            .commit(Some("HEAD"), &signature, &signature, "one", &tree, &[])
            .unwrap();
        let short = &commit.to_string()[..7];
        std::fs::write(dir.path().join("untracked.db"), "x").unwrap();
        assert_eq!(stand_in_tag(dir.path()), format!("local-{short}"));
        std::fs::write(dir.path().join("app.txt"), "two").unwrap();
        assert_eq!(stand_in_tag(dir.path()), format!("local-{short}-dirty"));
    }
}
