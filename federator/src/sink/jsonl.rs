//! The embedded default sink: one JSON object per line, appended and synced per group commit.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use vigil_proto::pool::Results;

use super::{Sink, SinkError};
use crate::record::write_json;

pub struct JsonlSink {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl JsonlSink {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: &Path) -> Result<Self, SinkError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::Write {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(file)),
        })
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn write(&mut self, batches: Vec<Arc<Results>>) -> BoxFuture<'static, Result<(), SinkError>> {
        let mut buf = Vec::with_capacity(batches.iter().map(|b| b.len() * 320).sum());
        for result in batches.iter().flat_map(|b| b.iter()) {
            write_json(result, &mut buf);
            buf.push(b'\n');
        }
        let file = Arc::clone(&self.file);
        let path = self.path.display().to_string();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut f = file.lock().unwrap();
                f.write_all(&buf)?;
                f.sync_data()
            })
            .await
            .unwrap_or_else(|join| Err(std::io::Error::other(join)))
            .map_err(|source| SinkError::Write { path, source })
        }
        .boxed()
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        async { Ok(()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::ProbeResult;

    use crate::record::ResultRecord;

    #[tokio::test]
    async fn appends_one_line_per_result() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut sink = JsonlSink::open(&path).unwrap();
        let batch = |seqs: &[u64]| {
            Arc::new(
                seqs.iter()
                    .map(|&seq| ProbeResult {
                        seq,
                        agent_id: "a".into(),
                        ..Default::default()
                    })
                    .collect(),
            )
        };
        sink.write(vec![batch(&[1, 2]), batch(&[3])]).await.unwrap();
        let mut again = JsonlSink::open(&path).unwrap();
        again.write(vec![batch(&[4])]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<ResultRecord>(l).unwrap().seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
    }

    #[test]
    fn unwritable_path_names_the_file() {
        let err = JsonlSink::open(Path::new("/nonexistent-dir/r.jsonl"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("writing to /nonexistent-dir/r.jsonl:"),
            "{err}"
        );
    }
}
