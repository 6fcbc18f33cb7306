//! Reading the Docker daemon's push stream: per-layer progress, the tally of layers uploaded
//! and skipped, and the pushed digest.
//!
//! The daemon reports each layer as `Preparing`, then either `Layer already exists` /
//! `Mounted from <repo>` (nothing uploaded) or a run of `Pushing` updates followed by
//! `Pushed`; it closes with `<tag>: digest: sha256:<hex> size: <n>`. bollard's
//! `PushImageInfo` keeps `status` and `progressDetail` but drops the layer `id` and the `aux`
//! object, so the digest is read from that closing status and an upload's progress is told
//! apart from a concurrent one by the layer size the daemon states (`progressDetail.total`).
//! When several layers of the image have the same size (the image history says how many),
//! the count of `Pushed` messages tells how many of them were uploaded.

use std::collections::HashMap;

use bollard::models::PushImageInfo;

/// One step of a push, as reported to the caller's progress callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushProgress {
    /// An attempt to push one tag starts.
    TagStarted {
        /// `registry/path:tag` as the daemon pushes it (with any endpoint override).
        target: String,
        attempt: u32,
    },
    /// A layer's upload advanced. `layer_size` is the layer's size as the daemon states it;
    /// `sent` counts the layer bytes read for upload so far (it can pass `layer_size` by the
    /// size of the tar headers).
    LayerUploading { layer_size: u64, sent: u64 },
    /// A layer finished uploading.
    LayerUploaded,
    /// A layer was not uploaded because the registry already has it; `mounted_from` names the
    /// repository it was linked from when the daemon mounted it across repositories.
    LayerSkipped { mounted_from: Option<String> },
    /// The daemon itself retries a layer (it says `Retrying in N seconds`).
    LayerRetrying { message: String },
    /// The registry accepted the manifest for a tag.
    TagPushed { tag: String, digest: String },
    /// An attempt failed with a failure worth another try; the next starts after `delay`.
    Retrying {
        target: String,
        failed_attempt: u32,
        delay: std::time::Duration,
        reason: String,
    },
    /// The registry resolves the tag to the pushed digest.
    Verified { tag: String, digest: String },
}

/// What one message of the daemon's push stream says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DaemonMessage {
    Uploading {
        layer_size: u64,
        sent: u64,
    },
    Uploaded,
    Skipped {
        mounted_from: Option<String>,
    },
    Retrying {
        message: String,
    },
    Digest {
        tag: String,
        digest: String,
    },
    /// Preparing, Waiting, "The push refers to repository [...]", and anything new.
    Other,
}

pub(crate) fn interpret(info: &PushImageInfo) -> DaemonMessage {
    let Some(status) = info.status.as_deref() else {
        return DaemonMessage::Other;
    };
    match status {
        "Pushing" => {
            let detail = info.progress_detail.as_ref();
            let number = |value: Option<i64>| value.and_then(|v| u64::try_from(v).ok());
            match detail.and_then(|d| number(d.current)) {
                Some(sent) => DaemonMessage::Uploading {
                    layer_size: detail.and_then(|d| number(d.total)).unwrap_or(0),
                    sent,
                },
                None => DaemonMessage::Other,
            }
        }
        "Pushed" => DaemonMessage::Uploaded,
        "Layer already exists" => DaemonMessage::Skipped { mounted_from: None },
        _ => {
            if let Some(from) = status.strip_prefix("Mounted from ") {
                DaemonMessage::Skipped {
                    mounted_from: Some(from.trim().to_string()),
                }
            } else if status.starts_with("Retrying in ") {
                DaemonMessage::Retrying {
                    message: status.to_string(),
                }
            } else if let Some((tag, digest)) = parse_digest_status(status) {
                DaemonMessage::Digest { tag, digest }
            } else {
                DaemonMessage::Other
            }
        }
    }
}

/// Parses `<tag>: digest: sha256:<64 hex> size: <n>`.
pub(crate) fn parse_digest_status(status: &str) -> Option<(String, String)> {
    let (tag, rest) = status.split_once(": digest: ")?;
    let digest = rest.split_whitespace().next()?;
    is_sha256_digest(digest).then(|| (tag.trim().to_string(), digest.to_string()))
}

/// Whether `text` is `sha256:` followed by 64 lowercase hex digits.
pub(crate) fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Layers uploaded and skipped during one attempt to push one tag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LayerTally {
    pub(crate) uploaded: usize,
    pub(crate) skipped: usize,
    /// The furthest `sent` seen per layer size the daemon states: the stream as bollard
    /// exposes it carries no layer id, so layers of the same size share an entry.
    sent_by_layer_size: HashMap<u64, u64>,
}

/// How many layers of an image have each size (from the image history), so that the bytes of
/// layers that share a size are not counted once only.
pub(crate) type LayerSizes = HashMap<u64, usize>;

impl LayerTally {
    pub(crate) fn record(&mut self, message: &DaemonMessage) {
        match message {
            DaemonMessage::Uploading { layer_size, sent } => {
                let furthest = self.sent_by_layer_size.entry(*layer_size).or_default();
                *furthest = (*furthest).max(*sent);
            }
            DaemonMessage::Uploaded => self.uploaded += 1,
            DaemonMessage::Skipped { .. } => self.skipped += 1,
            DaemonMessage::Retrying { .. }
            | DaemonMessage::Digest { .. }
            | DaemonMessage::Other => {}
        }
    }

    /// Layer bytes read for upload in this attempt.
    ///
    /// Each size seen in the progress stands for at least one uploaded layer; the `Pushed`
    /// messages beyond those are given to sizes that several layers of the image share
    /// (largest first, up to the count of layers with that size), and each such layer counts
    /// the furthest `sent` of its size. Exact when layer sizes differ; when two uploaded
    /// layers share a size, their tar overheads are taken to be equal.
    pub(crate) fn bytes_uploaded(&self, layer_sizes: &LayerSizes) -> u64 {
        let mut sizes: Vec<(u64, u64)> = self
            .sent_by_layer_size
            .iter()
            .map(|(size, sent)| (*size, *sent))
            .collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let mut unassigned = self.uploaded.saturating_sub(sizes.len());
        sizes
            .iter()
            .map(|(size, sent)| {
                // Layers with no content (only directories or links) have size 0 in the
                // history, as do history entries that made no layer: never multiply those.
                let sharing = if *size == 0 {
                    1
                } else {
                    layer_sizes.get(size).copied().unwrap_or(1).max(1)
                };
                let extra = unassigned.min(sharing - 1);
                unassigned -= extra;
                sent * (1 + extra as u64)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ProgressDetail;

    fn status(text: &str) -> PushImageInfo {
        PushImageInfo {
            status: Some(text.to_string()),
            ..Default::default()
        }
    }

    fn pushing(current: i64, total: i64) -> PushImageInfo {
        PushImageInfo {
            status: Some("Pushing".to_string()),
            progress_detail: Some(ProgressDetail {
                current: Some(current),
                total: Some(total),
            }),
            ..Default::default()
        }
    }

    const DIGEST: &str = "sha256:385ff387512df82dff10e4d0c35eea90d4434d284957c4c33e8850f80b0c9096";

    #[test]
    fn messages_are_interpreted() {
        let cases = [
            (
                status("The push refers to repository [127.0.0.1:5000/x]"),
                DaemonMessage::Other,
            ),
            (status("Preparing"), DaemonMessage::Other),
            (status("Waiting"), DaemonMessage::Other),
            (
                status("Layer already exists"),
                DaemonMessage::Skipped { mounted_from: None },
            ),
            (
                status("Mounted from envelope-test/busybox"),
                DaemonMessage::Skipped {
                    mounted_from: Some("envelope-test/busybox".to_string()),
                },
            ),
            (status("Pushed"), DaemonMessage::Uploaded),
            (
                pushing(33280, 3_000_000),
                DaemonMessage::Uploading {
                    layer_size: 3_000_000,
                    sent: 33280,
                },
            ),
            (
                status("Retrying in 5 seconds"),
                DaemonMessage::Retrying {
                    message: "Retrying in 5 seconds".to_string(),
                },
            ),
            (
                status(&format!("a: digest: {DIGEST} size: 1775")),
                DaemonMessage::Digest {
                    tag: "a".to_string(),
                    digest: DIGEST.to_string(),
                },
            ),
            (
                status("v1: digest: sha256:short size: 1"),
                DaemonMessage::Other,
            ),
            (PushImageInfo::default(), DaemonMessage::Other),
        ];
        for (info, expected) in cases {
            assert_eq!(interpret(&info), expected, "{info:?}");
        }
    }

    #[test]
    fn a_first_push_counts_uploads_and_bytes() {
        // Recorded from dockerd 20.10 pushing a 3 MB layer and a 3-byte layer, with five
        // base layers mounted from another repository.
        let stream = [
            status("Preparing"),
            status("Mounted from scratch/probe"),
            status("Mounted from scratch/probe"),
            pushing(512, 3),
            pushing(33280, 3_000_000),
            pushing(2560, 3),
            status("Mounted from scratch/probe"),
            pushing(1_500_000, 3_000_000),
            pushing(3_001_856, 3_000_000),
            status("Pushed"),
            status("Mounted from scratch/probe"),
            status("Mounted from scratch/probe"),
            status("Pushed"),
            status(&format!("a: digest: {DIGEST} size: 1775")),
        ];
        let mut tally = LayerTally::default();
        for info in &stream {
            tally.record(&interpret(info));
        }
        assert_eq!(tally.uploaded, 2);
        assert_eq!(tally.skipped, 5);
        assert_eq!(tally.bytes_uploaded(&LayerSizes::new()), 3_001_856 + 2560);
    }

    #[test]
    fn a_re_push_uploads_nothing() {
        let stream = [
            status("Preparing"),
            status("Layer already exists"),
            status("Layer already exists"),
            status(&format!("a: digest: {DIGEST} size: 1775")),
        ];
        let mut tally = LayerTally::default();
        for info in &stream {
            tally.record(&interpret(info));
        }
        assert_eq!(
            (
                tally.uploaded,
                tally.skipped,
                tally.bytes_uploaded(&LayerSizes::new())
            ),
            (0, 2, 0)
        );
    }

    /// Two 8 MiB layers progress side by side with the same stated size.
    #[test]
    fn layers_of_the_same_size_are_each_counted() {
        let size = 8 * 1024 * 1024;
        let uploads = [
            pushing(1_000_000, size),
            pushing(500_000, size),
            pushing(4_000_000, size),
            pushing(8_390_656, size),
            status("Pushed"),
            pushing(8_390_656, size),
            status("Pushed"),
        ];
        let mut tally = LayerTally::default();
        for info in &uploads {
            tally.record(&interpret(info));
        }
        let sizes = LayerSizes::from([(size as u64, 2), (0, 3)]);
        assert_eq!(tally.bytes_uploaded(&sizes), 2 * 8_390_656);
        // Without the history the two look like one.
        assert_eq!(tally.bytes_uploaded(&LayerSizes::new()), 8_390_656);
    }

    /// Two layers share a size but the registry already had one of them.
    #[test]
    fn a_shared_size_counts_only_the_layers_uploaded() {
        let size = 1_000_000;
        let uploads = [
            status("Layer already exists"),
            pushing(400_000, size),
            pushing(1_001_984, size),
            status("Pushed"),
        ];
        let mut tally = LayerTally::default();
        for info in &uploads {
            tally.record(&interpret(info));
        }
        let sizes = LayerSizes::from([(size as u64, 2)]);
        assert_eq!(tally.bytes_uploaded(&sizes), 1_001_984);
    }
}
