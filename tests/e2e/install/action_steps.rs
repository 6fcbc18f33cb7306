//! Runs the steps of the repository's `action.yml` (a composite action) the way a GitHub
//! runner does, outside GitHub: each `run:` with `bash --noprofile --norc -eo pipefail` and
//! the runner's variables (`GITHUB_ACTION_PATH`, `GITHUB_OUTPUT`, `GITHUB_PATH`, `RUNNER_*`)
//! pointing at files and folders of a fake job; `${{ … }}` in `env:`, `with:` and `if:`
//! evaluated for the few forms the action uses (any other form fails the test); and
//! `actions/cache` played by a folder of saved entries, restored before the next step and
//! saved after a successful job, as the real one does.

use envelope_tests::env::repo_root;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[derive(Deserialize)]
struct Action {
    #[serde(default)]
    inputs: BTreeMap<String, Input>,
    runs: Runs,
}

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    default: String,
}

#[derive(Deserialize)]
struct Runs {
    using: String,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    id: Option<String>,
    #[serde(rename = "if")]
    condition: Option<String>,
    shell: Option<String>,
    run: Option<String>,
    uses: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    with: BTreeMap<String, String>,
}

/// The cache `actions/cache` would keep between jobs: one folder per key.
pub(crate) struct ActionsCache {
    pub(crate) dir: PathBuf,
}

/// One job on a fresh machine: its own HOME, RUNNER_TEMP and workspace.
pub(crate) struct Job {
    root: tempfile::TempDir,
    /// `RUNNER_ARCH` as GitHub names it (`X64`, `ARM64`).
    pub(crate) runner_arch: &'static str,
    /// Variables every step sees besides the runner's own (the download address).
    pub(crate) env: Vec<(String, String)>,
}

/// What happened to the action's steps in a job.
pub(crate) struct JobReport {
    /// Each step that ran (skipped ones are not listed): its id and its process output.
    pub(crate) steps: Vec<(String, Output)>,
    /// The key `actions/cache` was given, and whether it restored an entry.
    pub(crate) cache_key: String,
    pub(crate) cache_hit: bool,
    /// `GITHUB_OUTPUT` of every step, by step id.
    pub(crate) outputs: HashMap<String, HashMap<String, String>>,
    /// What the steps appended to `GITHUB_PATH`.
    pub(crate) github_path: Vec<PathBuf>,
    /// True when every step that ran succeeded.
    pub(crate) succeeded: bool,
}

impl JobReport {
    pub(crate) fn step(&self, id: &str) -> &Output {
        self.steps
            .iter()
            .find(|(step, _)| step == id)
            .map(|(_, output)| output)
            .unwrap_or_else(|| panic!("step {id} did not run"))
    }
}

impl Job {
    pub(crate) fn new(runner_arch: &'static str, env: Vec<(String, String)>) -> Self {
        let root = tempfile::tempdir().expect("job folder");
        for dir in ["home", "temp", "tool-cache", "workspace"] {
            std::fs::create_dir_all(root.path().join(dir)).expect("job folders");
        }
        Job {
            root,
            runner_arch,
            env,
        }
    }

    fn temp(&self) -> PathBuf {
        self.root.path().join("temp")
    }

    /// Runs `uses: ./` (the repository's action.yml) with these inputs; stops at the first
    /// failing step, as GitHub does; saves the cache entry after a successful job that missed.
    pub(crate) fn run_action(
        &self,
        inputs: &[(&str, &str)],
        cache: &ActionsCache,
        path_prefix: &str,
    ) -> JobReport {
        let text = std::fs::read_to_string(repo_root().join("action.yml")).expect("action.yml");
        let action: Action = serde_saphyr::from_str(&text).expect("action.yml parses");
        assert_eq!(
            action.runs.using, "composite",
            "action.yml is a composite action"
        );
        let mut inputs: HashMap<String, String> = inputs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        for (name, input) in &action.inputs {
            inputs.entry(name.clone()).or_insert(input.default.clone());
        }
        let mut report = JobReport {
            steps: Vec::new(),
            cache_key: String::new(),
            cache_hit: false,
            outputs: HashMap::new(),
            github_path: Vec::new(),
            succeeded: true,
        };
        let mut cache_path = None;
        for (index, step) in action.runs.steps.iter().enumerate() {
            let context = Context {
                inputs: &inputs,
                outputs: &report.outputs,
                runner_os: "Linux",
                runner_arch: self.runner_arch,
                runner_temp: self.temp(),
            };
            if let Some(condition) = &step.condition
                && !context.condition(condition)
            {
                continue;
            }
            if let Some(uses) = &step.uses {
                assert!(uses.starts_with("actions/cache@"), "unexpected step {uses}");
                let path = PathBuf::from(context.substitute(&step.with["path"]));
                report.cache_key = context.substitute(&step.with["key"]);
                report.cache_hit = cache.restore(&report.cache_key, &path);
                cache_path = Some(path);
                continue;
            }
            let id = step.id.clone().unwrap_or_else(|| format!("step-{index}"));
            assert_eq!(
                step.shell.as_deref(),
                Some("bash"),
                "step {id} runs in bash"
            );
            let script = step
                .run
                .as_deref()
                .expect("a step without `uses` has `run`");
            let env: Vec<(String, String)> = step
                .env
                .iter()
                .map(|(name, value)| (name.clone(), context.substitute(value)))
                .collect();
            let output = self.run_step(&id, script, &env, &report.github_path, path_prefix);
            let files = self.root.path().join(format!("files-{id}"));
            report
                .outputs
                .insert(id.clone(), parse_outputs(&read(&files.join("output"))));
            report.github_path.extend(
                read(&files.join("path"))
                    .lines()
                    .filter(|line| !line.is_empty())
                    .map(PathBuf::from),
            );
            let ok = output.status.success();
            report.steps.push((id, output));
            if !ok {
                report.succeeded = false;
                return report;
            }
        }
        if let Some(path) = cache_path
            && !report.cache_hit
        {
            cache.save(&report.cache_key, &path);
        }
        report
    }

    fn run_step(
        &self,
        id: &str,
        script: &str,
        env: &[(String, String)],
        github_path: &[PathBuf],
        path_prefix: &str,
    ) -> Output {
        let files = self.root.path().join(format!("files-{id}"));
        std::fs::create_dir_all(&files).expect("step files");
        for file in ["output", "path", "env", "summary"] {
            std::fs::write(files.join(file), "").expect("step file");
        }
        let script_file = files.join("script.sh");
        std::fs::write(&script_file, script).expect("step script");
        // Entries added to GITHUB_PATH come first in later steps, the newest first.
        let mut path: Vec<String> = github_path
            .iter()
            .rev()
            .map(|dir| dir.display().to_string())
            .collect();
        path.push(path_prefix.to_owned());
        let root = self.root.path();
        Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail"])
            .arg(&script_file)
            .current_dir(root.join("workspace"))
            .env_clear()
            .env("PATH", path.join(":"))
            .env("HOME", root.join("home"))
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_ACTION_PATH", repo_root())
            .env("GITHUB_WORKSPACE", root.join("workspace"))
            .env("GITHUB_OUTPUT", files.join("output"))
            .env("GITHUB_PATH", files.join("path"))
            .env("GITHUB_ENV", files.join("env"))
            .env("GITHUB_STEP_SUMMARY", files.join("summary"))
            .env("RUNNER_OS", "Linux")
            .env("RUNNER_ARCH", self.runner_arch)
            .env("RUNNER_TEMP", self.temp())
            .env("RUNNER_TOOL_CACHE", root.join("tool-cache"))
            .envs(self.env.iter().cloned())
            .envs(env.iter().cloned())
            .output()
            .expect("running bash")
    }
}

impl ActionsCache {
    fn entry(&self, key: &str) -> PathBuf {
        assert!(!key.contains('/'), "cache key {key:?}");
        self.dir.join(key)
    }

    /// Copies a saved entry to `path`; false when there is none (a miss).
    fn restore(&self, key: &str, path: &Path) -> bool {
        let entry = self.entry(key);
        if !entry.is_dir() {
            return false;
        }
        std::fs::create_dir_all(path).expect("cache path");
        copy_tree(&entry, path);
        true
    }

    fn save(&self, key: &str, path: &Path) {
        assert!(
            path.is_dir(),
            "the cache path {} was never filled",
            path.display()
        );
        let entry = self.entry(key);
        std::fs::create_dir_all(&entry).expect("cache entry");
        copy_tree(path, &entry);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .expect("running cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `name=value` lines and `name<<DELIMITER` blocks, as GitHub reads GITHUB_OUTPUT.
fn parse_outputs(text: &str) -> HashMap<String, String> {
    let mut outputs = HashMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delimiter)) = line.split_once("<<") {
            let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delimiter).collect();
            outputs.insert(name.to_owned(), value.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            outputs.insert(name.to_owned(), value.to_owned());
        }
    }
    outputs
}

/// What `${{ … }}` can name in the action's steps.
struct Context<'a> {
    inputs: &'a HashMap<String, String>,
    outputs: &'a HashMap<String, HashMap<String, String>>,
    runner_os: &'a str,
    runner_arch: &'a str,
    runner_temp: PathBuf,
}

impl Context<'_> {
    fn value(&self, expression: &str) -> String {
        let parts: Vec<&str> = expression.trim().split('.').collect();
        match parts.as_slice() {
            ["inputs", name] => self.inputs.get(*name).cloned().unwrap_or_default(),
            ["steps", step, "outputs", name] => self
                .outputs
                .get(*step)
                .and_then(|outputs| outputs.get(*name))
                .cloned()
                .unwrap_or_default(),
            ["runner", "os"] => self.runner_os.to_owned(),
            ["runner", "arch"] => self.runner_arch.to_owned(),
            ["runner", "temp"] => self.runner_temp.display().to_string(),
            _ => {
                panic!("action.yml uses `${{{{ {expression} }}}}`, which this test cannot evaluate")
            }
        }
    }

    fn substitute(&self, text: &str) -> String {
        let mut result = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${{") {
            let end = rest[start..]
                .find("}}")
                .unwrap_or_else(|| panic!("unclosed expression in {text:?}"));
            result.push_str(&rest[..start]);
            result.push_str(&self.value(&rest[start + 3..start + end]));
            rest = &rest[start + end + 2..];
        }
        result.push_str(rest);
        result
    }

    /// `if:` conditions of the form `NAME != ''` or `NAME == ''`.
    fn condition(&self, condition: &str) -> bool {
        let condition = condition.trim();
        if let Some(name) = condition.strip_suffix("!= ''") {
            !self.value(name).is_empty()
        } else if let Some(name) = condition.strip_suffix("== ''") {
            self.value(name).is_empty()
        } else {
            panic!("action.yml has `if: {condition}`, which this test cannot evaluate")
        }
    }
}
