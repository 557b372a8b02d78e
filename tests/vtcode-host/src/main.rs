//! A skill host written the way VT Code's is, against skillgate's compat module imported
//! under VT Code's module name: discovery parses each `plugin.json` into `PluginMetadata`,
//! a skill is loaded by trusting its own directory and handing that directory to
//! `load_plugin`, it runs through `Box<dyn NativePluginTrait>`, and every error travels
//! through `anyhow`. Nothing here configures trust: `PluginLoader::new()` finds the policy
//! the environment names (`SKILLGATE_POLICY`), as a VT Code build would.
//!
//! Usage: `vtcode-host SKILLS_DIR`. Prints one JSON object: per skill directory what
//! discovery, loading and running gave, and what the loader's own discovery found.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};
use skillgate::compat as native_plugin;

/// A skill found by discovery: its directory and the metadata its plugin.json states.
struct DiscoveredSkill {
    dir: PathBuf,
    metadata: native_plugin::PluginMetadata,
}

/// VT Code's discovery: every subdirectory holding a plugin.json that parses as
/// `PluginMetadata` is a native skill; one that does not parse is skipped with a warning.
fn discover_native_skills(skills_dir: &Path) -> Result<Vec<DiscoveredSkill>> {
    let mut found = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(skills_dir)
        .with_context(|| format!("reading {}", skills_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for dir in entries {
        let manifest = dir.join("plugin.json");
        if !dir.is_dir() || !manifest.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        match serde_json::from_str::<native_plugin::PluginMetadata>(&text) {
            Ok(metadata) => found.push(DiscoveredSkill { dir, metadata }),
            Err(e) => tracing::warn!("skipping {}: invalid plugin.json: {e}", dir.display()),
        }
    }
    Ok(found)
}

/// VT Code's load of one skill: its own directory is the trusted directory.
fn load_native_skill(skill_dir: &Path) -> Result<Box<dyn native_plugin::NativePluginTrait>> {
    let mut loader = native_plugin::PluginLoader::new();
    loader.add_trusted_dir(skill_dir.to_path_buf());
    let plugin: Box<dyn native_plugin::NativePluginTrait> = loader.load_plugin(skill_dir)?;
    Ok(plugin)
}

/// VT Code's call of a loaded skill.
fn run_native_skill(
    plugin: &dyn native_plugin::NativePluginTrait,
    workspace: &Path,
    input: HashMap<String, Value>,
) -> Result<native_plugin::PluginResult> {
    let ctx = native_plugin::PluginContext {
        input,
        workspace_root: Some(workspace.display().to_string()),
        config: HashMap::new(),
    };
    let result = plugin.execute(&ctx)?;
    if !result.success {
        return Err(anyhow!(
            "skill {} failed: {}",
            plugin.metadata().name,
            result.error.unwrap_or_default()
        ));
    }
    Ok(result)
}

/// Loads and runs one discovered skill, reporting the outcome.
fn try_skill(skill: &DiscoveredSkill, workspace: &Path) -> Value {
    let outcome = load_native_skill(&skill.dir).and_then(|plugin| {
        let name = plugin.metadata().name.clone();
        let input = HashMap::from([("who".to_owned(), json!("vtcode"))]);
        let result = run_native_skill(plugin.as_ref(), workspace, input)?;
        Ok((name, plugin.path().to_path_buf(), result))
    });
    let dir = skill
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    match outcome {
        Ok((name, path, result)) => json!({
            "dir": dir,
            "discovered_as": skill.metadata.name,
            "loaded": true,
            "name": name,
            "path": path,
            "output": result.output,
        }),
        Err(e) => json!({
            "dir": dir,
            "discovered_as": skill.metadata.name,
            "loaded": false,
            "error": format!("{e:#}"),
        }),
    }
}

/// VT Code's catalog: one loader trusting the skills directory, `discover_plugins`, and
/// the structure lint for each directory.
fn catalog(skills_dir: &Path) -> Result<Value> {
    let mut loader = native_plugin::PluginLoader::new();
    loader.add_trusted_dir(skills_dir.to_path_buf());
    let plugins = loader.discover_plugins()?;
    let names: Vec<String> = plugins.iter().map(|p| p.metadata().name.clone()).collect();
    Ok(json!({ "discovered": names }))
}

fn main() -> Result<()> {
    let skills_dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .ok_or_else(|| anyhow!("usage: vtcode-host SKILLS_DIR"))?,
    );
    let workspace = std::env::current_dir()?;
    let skills = discover_native_skills(&skills_dir)?;
    let report: Vec<Value> = skills.iter().map(|s| try_skill(s, &workspace)).collect();
    let catalog = catalog(&skills_dir).unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
    let lint: HashMap<String, Vec<String>> = skills
        .iter()
        .map(|s| {
            let problems = native_plugin::validate_plugin_structure(&s.dir)?;
            Ok((s.metadata.name.clone(), problems))
        })
        .collect::<Result<_>>()?;
    println!(
        "{}",
        json!({
            "abi": native_plugin::PLUGIN_ABI_VERSION,
            "library_filename": native_plugin::library_filename("x"),
            "skills": report,
            "catalog": catalog,
            "lint": lint,
        })
    );
    Ok(())
}
