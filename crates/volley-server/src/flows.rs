//! Published flows: compiled once, kept by version; conversations keep their version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use volley_flow::Flow;
use volley_store::Store;

use crate::error::ApiError;

/// One immutable published version of a flow, compiled.
#[derive(Debug)]
pub struct Published {
    pub id: String,
    pub version: i64,
    pub hash: String,
    pub flow: Arc<Flow>,
}

#[derive(Default)]
struct Entry {
    latest: Option<Arc<Published>>,
    versions: HashMap<i64, Arc<Published>>,
}

/// The flows this server runs.
#[derive(Default)]
pub struct Registry {
    entries: RwLock<HashMap<String, Entry>>,
}

/// The result of publishing a source.
pub struct Outcome {
    pub published: Arc<Published>,
    /// False when the source was identical to the latest version.
    pub created: bool,
    pub warnings: Vec<volley_flow::Diagnostic>,
}

/// The demo flows built into the binary (the repository's examples).
pub const DEMO_FLOWS: &[(&str, &str)] = &[
    (
        "lead-qualification.yaml",
        include_str!("../../../examples/lead-qualification.yaml"),
    ),
    (
        "product-quiz.yaml",
        include_str!("../../../examples/product-quiz.yaml"),
    ),
    (
        "mortgage-calculator.yaml",
        include_str!("../../../examples/mortgage-calculator.yaml"),
    ),
    (
        "policy-acknowledgement.yaml",
        include_str!("../../../examples/policy-acknowledgement.yaml"),
    ),
    (
        "training-scenario.yaml",
        include_str!("../../../examples/training-scenario.yaml"),
    ),
    (
        "support-triage.yaml",
        include_str!("../../../examples/support-triage.yaml"),
    ),
    (
        "fitness-checkin.yaml",
        include_str!("../../../examples/fitness-checkin.yaml"),
    ),
];

impl Registry {
    pub fn latest(&self, id: &str) -> Option<Arc<Published>> {
        self.entries
            .read()
            .expect("registry lock")
            .get(id)
            .and_then(|e| e.latest.clone())
    }

    /// Latest versions of all flows, by id.
    pub fn all(&self) -> Vec<Arc<Published>> {
        let map = self.entries.read().expect("registry lock");
        let mut v: Vec<Arc<Published>> = map.values().filter_map(|e| e.latest.clone()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// A specific version, compiled from the store on first use.
    pub async fn version(
        &self,
        store: &dyn Store,
        id: &str,
        version: i64,
    ) -> Result<Arc<Published>, ApiError> {
        if let Some(p) = self
            .entries
            .read()
            .expect("registry lock")
            .get(id)
            .and_then(|e| e.versions.get(&version))
        {
            return Ok(p.clone());
        }
        let row = store.flow_version(id, version).await?.ok_or_else(|| {
            ApiError::not_found(
                "unknown-flow",
                format!("flow `{id}` has no version {version}"),
            )
        })?;
        let flow = volley_flow::compile(&row.source).flow.ok_or_else(|| {
            ApiError::internal("stored flow does not compile", format!("{id} v{version}"))
        })?;
        let p = Arc::new(Published {
            id: id.into(),
            version,
            hash: row.hash,
            flow: Arc::new(flow),
        });
        let mut map = self.entries.write().expect("registry lock");
        Ok(map
            .entry(id.into())
            .or_default()
            .versions
            .entry(version)
            .or_insert(p)
            .clone())
    }

    /// Checks and publishes a flow source. A bad flow is refused with the same
    /// diagnostics as `volley check`, rendered and as JSON.
    pub async fn publish(
        &self,
        store: &dyn Store,
        file: &str,
        src: &str,
        now_ms: i64,
    ) -> Result<Outcome, ApiError> {
        let hash = volley_flow::content_hash(src);
        if let Some(latest) = self.all().into_iter().find(|p| p.hash == hash) {
            // The same source is already the latest version of its flow: nothing to do.
            return Ok(Outcome {
                published: latest,
                created: false,
                warnings: Vec::new(),
            });
        }
        let checked = volley_flow::compile(src);
        let Some(flow) = checked.flow else {
            let rendered: String = checked
                .diagnostics
                .iter()
                .map(|d| d.render(file, src, false))
                .collect();
            let json =
                serde_json::json!({"diagnostics": checked.diagnostics, "rendered": rendered});
            return Err(ApiError::unprocessable(
                "invalid-flow",
                format!("{file} has {} error(s); see `details`", checked.errors()),
            )
            .with_details(json));
        };
        let (row, created) = store
            .publish_flow(&flow.id, &flow.title, &flow.version, src, now_ms)
            .await?;
        let published = Arc::new(Published {
            id: row.flow_id.clone(),
            version: row.version,
            hash: row.hash,
            flow: Arc::new(flow),
        });
        let mut map = self.entries.write().expect("registry lock");
        let entry = map.entry(row.flow_id).or_default();
        let published = entry
            .versions
            .entry(row.version)
            .or_insert(published)
            .clone();
        entry.latest = Some(published.clone());
        Ok(Outcome {
            published,
            created,
            warnings: checked.diagnostics,
        })
    }

    /// Loads the latest version of every stored flow.
    pub async fn load(&self, store: &dyn Store) -> Result<usize, ApiError> {
        let rows = store.latest_flows().await?;
        let n = rows.len();
        for row in rows {
            match volley_flow::compile(&row.source).flow {
                Some(flow) => {
                    let p = Arc::new(Published {
                        id: row.flow_id.clone(),
                        version: row.version,
                        hash: row.hash,
                        flow: Arc::new(flow),
                    });
                    let mut map = self.entries.write().expect("registry lock");
                    let entry = map.entry(row.flow_id).or_default();
                    entry.versions.insert(row.version, p.clone());
                    entry.latest = Some(p);
                }
                None => {
                    tracing::error!(flow = %row.flow_id, version = row.version, "stored flow no longer compiles")
                }
            }
        }
        Ok(n)
    }

    /// Publishes flow files (name, source) concurrently, so the writes share commits;
    /// returns how many changed.
    pub async fn publish_files(
        &self,
        store: &dyn Store,
        files: &[(String, String)],
        now_ms: i64,
    ) -> Result<usize, ApiError> {
        let results = futures_util::future::join_all(
            files
                .iter()
                .map(|(name, src)| self.publish(store, name, src, now_ms)),
        )
        .await;
        let mut changed = 0;
        for r in results {
            changed += r?.created as usize;
        }
        Ok(changed)
    }
}

/// The YAML files of a directory (not its subdirectories), sorted, with their sources:
/// the flows and event files `--flows DIR` publishes.
pub fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read flows directory {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let src =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((path, src))
        })
        .collect()
}

/// Why publishing at start-up failed: the message and, for a bad file, its rendered
/// diagnostics (what `volley check` prints).
pub fn start_error(e: ApiError) -> String {
    match e.details.as_ref().and_then(|d| d["rendered"].as_str()) {
        Some(rendered) => format!("{}\n{rendered}", e.message),
        None => e.message,
    }
}
