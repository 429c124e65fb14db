//! The standard `process_*` series every dashboard expects (CPU, memory, file descriptors,
//! start time), read from `/proc` at each scrape, unprefixed as Prometheus names them; and
//! the container's own CPU and memory limits from its cgroup (v1 or v2), so panels and
//! alerts can compare usage with the limit the pod really has (`+Inf` where there is none).

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
    /// The cgroup's limits; `INFINITY` when unlimited, `None` when no cgroup says.
    pub memory_limit_bytes: Option<f64>,
    pub cpu_limit_cores: Option<f64>,
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
            memory_limit_bytes: cgroup::memory_limit(),
            cpu_limit_cores: cgroup::cpu_limit(),
        }
    }
}

/// The limits Kubernetes sets through the container's cgroup, under either hierarchy.
mod cgroup {
    use std::path::PathBuf;

    const ROOT: &str = "/sys/fs/cgroup";

    /// Where controller `v1` (or the unified hierarchy, `v1` empty) keeps this process's files.
    fn dir(v1: &str) -> Option<PathBuf> {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        cgroups.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let wanted = if v1.is_empty() { controllers.is_empty() } else { controllers.split(',').any(|c| c == v1) };
            if !wanted {
                return None;
            }
            let base = if v1.is_empty() { PathBuf::from(ROOT) } else { PathBuf::from(ROOT).join(v1) };
            // Inside a container the path names the host's hierarchy, mounted at the root.
            let nested = base.join(path.trim_start_matches('/'));
            Some(if nested.is_dir() { nested } else { base })
        })
    }

    fn read(dir: Option<PathBuf>, file: &str) -> Option<String> {
        std::fs::read_to_string(dir?.join(file)).ok().map(|s| s.trim().to_owned())
    }

    pub fn memory_limit() -> Option<f64> {
        match read(dir(""), "memory.max") {
            Some(v2) => parse_memory_max(&v2),
            None => read(dir("memory"), "memory.limit_in_bytes").and_then(|v1| parse_memory_limit_in_bytes(&v1)),
        }
    }

    pub fn cpu_limit() -> Option<f64> {
        match read(dir(""), "cpu.max") {
            Some(v2) => parse_cpu_max(&v2),
            None => {
                let quota = read(dir("cpu"), "cpu.cfs_quota_us")?;
                let period = read(dir("cpu"), "cpu.cfs_period_us")?;
                parse_cfs(&quota, &period)
            }
        }
    }

    /// v2 `memory.max`: bytes, or `max`.
    pub fn parse_memory_max(text: &str) -> Option<f64> {
        if text == "max" { Some(f64::INFINITY) } else { text.parse::<f64>().ok() }
    }

    /// v1 `memory.limit_in_bytes`: bytes, near 2^63 when unlimited.
    pub fn parse_memory_limit_in_bytes(text: &str) -> Option<f64> {
        let bytes = text.parse::<u64>().ok()?;
        Some(if bytes >= 1 << 62 { f64::INFINITY } else { bytes as f64 })
    }

    /// v2 `cpu.max`: `<quota> <period>` in microseconds, or `max <period>`.
    pub fn parse_cpu_max(text: &str) -> Option<f64> {
        let (quota, period) = text.split_once(' ')?;
        parse_cfs(if quota == "max" { "-1" } else { quota }, period)
    }

    /// v1 CFS quota and period: cores, `-1` quota meaning unlimited.
    pub fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
        let (quota, period) = (quota.parse::<i64>().ok()?, period.parse::<f64>().ok()?);
        if quota < 0 {
            return Some(f64::INFINITY);
        }
        (period > 0.0).then(|| quota as f64 / period)
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
        let limits = [
            (
                "edgexds_memory_limit",
                "The container's memory limit from its cgroup (+Inf when unlimited)",
                Some(Unit::Bytes),
                sample.memory_limit_bytes,
            ),
            (
                "edgexds_cpu_limit_cores",
                "The container's CPU limit in cores from its cgroup (+Inf when unlimited)",
                None,
                sample.cpu_limit_cores,
            ),
        ];
        for (name, help, unit, value) in gauges.into_iter().chain(limits) {
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
        assert!(sample.memory_limit_bytes.is_some_and(|l| l > 0.0), "a limit, or +Inf: {sample:?}");
    }

    #[test]
    fn cgroup_limits_read_in_both_hierarchies_and_unlimited_is_infinite() {
        use cgroup::*;
        assert_eq!(parse_memory_max("134217728"), Some(134_217_728.0));
        assert_eq!(parse_memory_max("max"), Some(f64::INFINITY));
        assert_eq!(parse_memory_limit_in_bytes("134217728"), Some(134_217_728.0));
        assert_eq!(parse_memory_limit_in_bytes("9223372036854771712"), Some(f64::INFINITY));
        assert_eq!(parse_cpu_max("50000 100000"), Some(0.5));
        assert_eq!(parse_cpu_max("max 100000"), Some(f64::INFINITY));
        assert_eq!(parse_cfs("200000", "100000"), Some(2.0));
        assert_eq!(parse_cfs("-1", "100000"), Some(f64::INFINITY));
        assert_eq!(parse_memory_max("garbage"), None);
    }
}
