//! `edgexds proxy-status`: the connected proxies as a table, like `istioctl proxy-status`.

use std::fmt::Write;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::xds::{ProxyReport, SyncState};

/// Fetches `/debug/proxies` from the debug server.
pub async fn fetch(debug_url: &str) -> Result<Vec<ProxyReport>, String> {
    let url = format!("{}/debug/proxies", debug_url.trim_end_matches('/'));
    let uri = url.parse().map_err(|e| format!("invalid debug URL {debug_url:?}: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client.get(uri).await.map_err(|e| format!("cannot reach {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("{url} did not return a proxy list: {e}"))
}

fn short(version: Option<&String>) -> String {
    version.map_or_else(|| "-".to_owned(), |v| v.chars().take(8).collect())
}

/// The table, then one line per NACK with Envoy's own message.
pub fn render(proxies: &[ProxyReport]) -> String {
    let mut rows = vec![
        [
            "NODE",
            "CLUSTER",
            "LOCALITY",
            "PLACE",
            "METHOD",
            "CDS",
            "EDS",
            "LDS",
            "RDS",
            "STATE",
            "SIDECAR",
            "CONNECTED",
            "CLIENT",
        ]
        .map(String::from),
    ];
    for p in proxies {
        let column = |ty: &str| {
            p.types.get(ty).map_or_else(
                || "-".to_owned(),
                |t| {
                    let acked = short(t.version_acked.as_ref());
                    let mark = if t.pending_nonce.is_some() { " (pending)" } else { "" };
                    format!("{acked} [{}]{mark}", t.resources)
                },
            )
        };
        let state = p.state.name();
        rows.push([
            p.node_id.clone(),
            p.cluster.clone(),
            p.locality.clone(),
            p.place.render(),
            format!("{}/{}", p.method, p.flavour),
            column("cds"),
            column("eds"),
            column("lds"),
            column("rds"),
            state.to_owned(),
            match (&p.sidecar_template, p.outdated) {
                (None, _) => "-".to_owned(),
                (Some(_), false) => "current".to_owned(),
                (Some(_), true) => "OUTDATED".to_owned(),
            },
            p.connected_since.clone(),
            if p.client.is_empty() { p.user_agent.clone() } else { p.client.clone() },
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for p in proxies {
        for (ty, t) in &p.types {
            if let Some(nack) = t.last_nack.as_ref().filter(|_| p.state == SyncState::Nacked) {
                let _ = writeln!(
                    out,
                    "\n{} rejected {ty} version {}: {}",
                    p.node_id,
                    short(Some(&nack.version)),
                    nack.message
                );
            }
        }
    }
    let outdated: Vec<&str> = proxies.iter().filter(|p| p.outdated).map(|p| p.node_id.as_str()).collect();
    if !outdated.is_empty() {
        let _ = writeln!(
            out,
            "\n{} sidecar(s) injected from an older template or edgexds version; restart their workloads: {}",
            outdated.len(),
            outdated.join(", ")
        );
    }
    if proxies.is_empty() {
        out.push_str("(no proxies connected)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::xds::proxies::{NackReport, TypeReport};

    fn proxy(state: SyncState, nack: Option<&str>) -> ProxyReport {
        let cds = TypeReport {
            subscribed: "*".into(),
            resources: 2,
            version_sent: Some("0123456789abcdef".into()),
            version_acked: Some("0123456789abcdef".into()),
            pending_nonce: None,
            last_nack: nack.map(|m| NackReport {
                version: "fedcba9876543210".into(),
                message: m.into(),
                at: "t".into(),
            }),
        };
        ProxyReport {
            node_id: "sidecar-1".into(),
            cluster: "demo".into(),
            locality: "zone-a".into(),
            user_agent: "envoy 1.40.0".into(),
            method: "ads".into(),
            flavour: "delta".into(),
            client: "envoy 1.40.0".into(),
            identity: None,
            connected_since: "2026-01-01T00:00:00Z".into(),
            state,
            types: BTreeMap::from([("cds".to_owned(), cds)]),
            place: crate::xds::proxies::PlaceReport {
                zone: Some("zone-b".into()),
                zone_from: "node-label".into(),
                node: Some("n1".into()),
                node_from: "token".into(),
            },
            sidecar_template: None,
            outdated: false,
        }
    }

    #[test]
    fn table_shows_versions_state_and_nack_messages() {
        let table = render(&[proxy(SyncState::Synced, None)]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NODE"));
        assert!(lines[1].contains("sidecar-1") && lines[1].contains("01234567 [2]") && lines[1].contains("SYNCED"));
        assert!(lines[1].contains("zone-b (node-label), n1 (token)"), "the place and who said it: {table}");
        let nacked = render(&[proxy(SyncState::Nacked, Some("bad cluster"))]);
        assert!(nacked.contains("sidecar-1 rejected cds version fedcba98: bad cluster"), "{nacked}");
    }

    #[test]
    fn a_sidecar_from_an_older_template_is_flagged_with_what_to_do() {
        let current = ProxyReport { sidecar_template: Some("aaaa".into()), ..proxy(SyncState::Synced, None) };
        let old = ProxyReport {
            node_id: "web-1.shop".into(),
            sidecar_template: Some("bbbb".into()),
            outdated: true,
            ..proxy(SyncState::Synced, None)
        };
        let table = render(&[current, old]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].contains("current") && lines[2].contains("OUTDATED"), "{table}");
        assert!(table.contains(
            "1 sidecar(s) injected from an older template or edgexds version; restart their workloads: web-1.shop"
        ));
    }
}
