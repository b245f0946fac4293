//! A latency histogram that every request updates without a lock: fixed
//! bucket bounds, one atomic count per bucket, and the sum as the bits of
//! an `f64` advanced by compare-and-swap. It encodes exactly as the
//! registry's own (locked) histogram does, so the exposition is unchanged.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug)]
pub struct AtomicHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds, ascending, the last one `+Inf`.
    bounds: Box<[f64]>,
    /// Observations per bucket (not cumulative).
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_bits: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Box<[f64]> = bounds
            .into_iter()
            .filter(|bound| bound.is_finite())
            .chain(std::iter::once(f64::INFINITY))
            .collect();
        let counts = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        let inner =
            Inner { bounds, counts, count: AtomicU64::new(0), sum_bits: AtomicU64::new(0f64.to_bits()) };
        Self { inner: Arc::new(inner) }
    }

    pub fn observe(&self, value: f64) {
        let inner = &*self.inner;
        // As the registry's histogram: the first bound at or above the
        // value; NaN in the last bucket.
        let bucket = inner.bounds.iter().position(|bound| *bound >= value).unwrap_or(inner.bounds.len() - 1);
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        inner.count.fetch_add(1, Ordering::Relaxed);
        let _ = inner.sum_bits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &*self.inner;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .zip(inner.counts.iter())
            .map(|(bound, count)| (*bound, count.load(Ordering::Relaxed)))
            .collect();
        // A scrape racing an observation may see it in its bucket and not
        // yet in the count or the sum; the next scrape agrees.
        let count = inner.count.load(Ordering::Relaxed);
        let sum = f64::from_bits(inner.sum_bits.load(Ordering::Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    const BOUNDS: [f64; 5] = [0.001, 0.01, 0.1, 1.0, 10.0];

    fn exposition(metric: impl EncodeMetric + Send + Sync + std::fmt::Debug + 'static) -> String {
        let mut registry = Registry::with_prefix("t");
        registry.register("latency", "help", metric);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn it_exposes_what_the_locked_histogram_exposes() {
        let values =
            [0.0, 0.0005, 0.001, 0.0010001, 0.05, 0.1, 0.7, 1.0, 3.0, 10.0, 11.0, 1e9, f64::NAN, 0.02];
        let ours = AtomicHistogram::new(BOUNDS);
        let theirs = Histogram::new(BOUNDS);
        for (n, value) in values.iter().enumerate() {
            ours.observe(*value);
            theirs.observe(*value);
            if n == 0 || n == values.len() - 1 {
                assert_eq!(exposition(ours.clone()), exposition(theirs.clone()));
            }
        }
        // Not NaN throughout: compare the sum before the NaN too.
        let (ours, theirs) = (AtomicHistogram::new(BOUNDS), Histogram::new(BOUNDS));
        for value in [0.25, 0.003, 4.5] {
            ours.observe(value);
            theirs.observe(value);
        }
        let text = exposition(ours.clone());
        assert_eq!(text, exposition(theirs));
        assert!(
            text.contains("t_latency_count 3\n") && text.contains("t_latency_bucket{le=\"0.01\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn observations_from_many_threads_are_all_counted() {
        let histogram = AtomicHistogram::new(BOUNDS);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        histogram.observe(0.5);
                    }
                });
            }
        });
        let text = exposition(histogram);
        assert!(text.contains("t_latency_count 40000\n"), "{text}");
        assert!(text.contains("t_latency_sum 20000.0\n"), "{text}");
        assert!(text.contains("t_latency_bucket{le=\"0.1\"} 0\n"), "{text}");
        assert!(text.contains("t_latency_bucket{le=\"1.0\"} 40000\n"), "{text}");
    }
}
