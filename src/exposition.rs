//! The building blocks of metric families (Prometheus' protobuf types), so
//! that each collector can render its own part: gauge families
//! ([`Family`]), counter families ([`counter_family`]). Names and help
//! texts come from the caller; the contract, every family with its help,
//! is [`crate::metrics::FAMILIES`].

use prometheus::proto::{
    Counter as PromCounter, Gauge, LabelPair, Metric, MetricFamily, MetricType,
};

/// Collects gauge samples for one family.
pub struct Family {
    name: &'static str,
    help: &'static str,
    pub metrics: Vec<Metric>,
}

impl Family {
    pub fn new(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            metrics: Vec::new(),
        }
    }

    pub fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let pairs = label_pairs(labels);
        let mut g = Gauge::default();
        g.set_value(value);
        let mut m = Metric::from_gauge(g);
        m.set_label(pairs);
        self.metrics.push(m);
    }

    pub fn build(self) -> MetricFamily {
        let mut f = MetricFamily::default();
        f.set_name(self.name.to_string());
        f.set_help(self.help.to_string());
        f.set_field_type(MetricType::GAUGE);
        f.set_metric(self.metrics);
        f
    }
}

/// `base` plus one more label.
pub fn with<'a>(base: &[(&'a str, &'a str)], extra: (&'a str, &'a str)) -> Vec<(&'a str, &'a str)> {
    let mut v = base.to_vec();
    v.push(extra);
    v
}

/// The label pairs of one series.
fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(k, v)| {
            let mut p = LabelPair::default();
            p.set_name(k.to_string());
            p.set_value(v.to_string());
            p
        })
        .collect()
}

/// A counter family of `metrics` ([`counter_metric`]).
pub fn counter_family(name: &str, help: &str, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(MetricType::COUNTER);
    f.set_metric(metrics);
    f
}

/// One counter series.
pub fn counter_metric(labels: &[(&str, &str)], value: u64) -> Metric {
    let pairs = label_pairs(labels);
    let mut c = PromCounter::default();
    c.set_value(value as f64);
    let mut m = Metric::default();
    m.set_counter(c);
    m.set_label(pairs);
    m
}
