//! The standard `process_*` series every dashboard expects (CPU, memory, file descriptors,
//! start time), read from `/proc` at each scrape, unprefixed as Prometheus names them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

#[derive(Debug)]
pub struct ProcessCollector;

/// One scrape's values; `None` where `/proc` could not say (another OS, a hardened kernel).
#[derive(Debug, Default, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessSample {
    pub fn now() -> Self {
        let Ok(me) = procfs::process::Process::myself() else { return Self::default() };
        let stat = me.stat().ok();
        let ticks = procfs::ticks_per_second() as f64;
        let page = procfs::page_size() as f64;
        let boot = procfs::boot_time_secs().ok().map(|b| b as f64);
        let max_fds = me.limits().ok().and_then(|l| match l.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(v) => Some(v as f64),
            procfs::process::LimitValue::Unlimited => None,
        });
        Self {
            cpu_seconds: stat.as_ref().map(|s| (s.utime + s.stime) as f64 / ticks),
            resident_bytes: stat.as_ref().map(|s| s.rss as f64 * page),
            virtual_bytes: stat.as_ref().map(|s| s.vsize as f64),
            open_fds: me.fd_count().ok().map(|n| n as f64),
            max_fds,
            start_time_seconds: stat.as_ref().zip(boot).map(|(s, boot)| boot + s.starttime as f64 / ticks),
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = ProcessSample::now();
        if let Some(cpu) = sample.cpu_seconds {
            let counter = ConstCounter::new(cpu);
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let gauges = [
            ("process_resident_memory", "Resident memory size in bytes", Some(Unit::Bytes), sample.resident_bytes),
            ("process_virtual_memory", "Virtual memory size in bytes", Some(Unit::Bytes), sample.virtual_bytes),
            ("process_open_fds", "Number of open file descriptors", None, sample.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors", None, sample.max_fds),
            (
                "process_start_time",
                "Start time of the process since the Unix epoch in seconds",
                Some(Unit::Seconds),
                sample.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                let metric = encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?;
                gauge.encode(metric)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_memory_descriptors_and_a_start_time() {
        let sample = ProcessSample::now();
        assert!(sample.resident_bytes.is_some_and(|b| b > 1e6), "{sample:?}");
        assert!(sample.open_fds.is_some_and(|n| n >= 3.0), "{sample:?}");
        assert!(sample.cpu_seconds.is_some_and(|s| s >= 0.0));
        let started = sample.start_time_seconds.expect("a start time");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(started <= now + 1.0 && now - started < 3600.0, "started {started}, now {now}");
    }
}
