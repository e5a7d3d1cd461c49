//! The last SCIM requests (time, token, client, method, resource, status and the
//! reason of a refusal), kept in memory for the dashboard so that refused reads show
//! up next to the audit log (which keeps every write, refused or not, for good).
//! Bounded: the oldest entry goes when a new one comes. Lost on restart.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::http::Body;

/// How many requests are kept.
pub(crate) const CAPACITY: usize = 200;

/// One SCIM request as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScimRequestRecord {
    pub time: crate::clock::Timestamp,
    /// The authenticated token's name; `None` when authentication failed.
    pub token: Option<String>,
    /// The client's address (the TCP peer, or from a trusted proxy's header).
    pub client: IpAddr,
    pub method: String,
    /// The endpoint below /scim/v2, e.g. `Users`, `Groups/.search`, `Bulk`.
    pub endpoint: String,
    /// The resource id from the path, or from `Location` for a create.
    pub id: Option<String>,
    pub status: u16,
    /// The SCIM error's `detail` when the request was refused.
    pub reason: Option<String>,
}

impl ScimRequestRecord {
    /// Whether the request found the resource it named (a 2xx or 3xx answer): one
    /// that is gone now was deleted since, where a 404 found none either.
    pub(crate) fn found_its_resource(&self) -> bool {
        (200..400).contains(&self.status)
    }
    /// The type of the resource it named: its endpoint `Users` or `Groups`.
    pub(crate) fn resource_type(&self) -> Option<crate::scim::schema::ResourceType> {
        use crate::scim::schema::ResourceType;
        match self.endpoint.as_str() {
            "Users" => Some(ResourceType::User),
            "Groups" => Some(ResourceType::Group),
            _ => None,
        }
    }
}

#[derive(Default)]
pub(crate) struct Activity {
    ring: Mutex<VecDeque<ScimRequestRecord>>,
}

/// Splits a path below /scim/v2 into the endpoint and a resource id.
fn split(rest: &str) -> (String, Option<String>) {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [rt @ ("Users" | "Groups"), id] if !id.starts_with('.') => {
            ((*rt).to_owned(), Some((*id).to_owned()))
        }
        [] => ("/".to_owned(), None),
        other => (other.join("/"), None),
    }
}

impl Activity {
    /// Keeps one answered request; returns it as recorded (the id a create got
    /// included).
    pub(crate) fn record(
        &self,
        method: &str,
        rest: &str,
        (token, client): (Option<String>, IpAddr),
        reason: Option<String>,
        response: &hyper::Response<Body>,
    ) -> ScimRequestRecord {
        let (endpoint, mut id) = split(rest);
        let status = response.status().as_u16();
        if id.is_none() && status == 201 {
            id = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.rsplit('/').next())
                .map(str::to_owned);
        }
        let record = ScimRequestRecord {
            time: crate::clock::Timestamp::now(),
            token,
            client,
            method: method.to_owned(),
            endpoint,
            id,
            status,
            reason,
        };
        if let Ok(mut ring) = self.ring.lock() {
            if ring.len() == CAPACITY {
                ring.pop_front();
            }
            ring.push_back(record.clone());
        }
        record
    }

    /// Up to `limit` requests, newest first.
    pub(crate) fn recent(&self, limit: usize) -> Vec<ScimRequestRecord> {
        match self.ring.lock() {
            Ok(ring) => ring.iter().rev().take(limit).cloned().collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, location: Option<&str>) -> hyper::Response<Body> {
        let mut r = hyper::Response::new(Body::new(bytes::Bytes::new()));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        if let Some(l) = location {
            r.headers_mut()
                .insert(hyper::header::LOCATION, l.parse().unwrap());
        }
        r
    }

    #[test]
    fn create_takes_the_id_from_location_and_failures_are_kept() {
        let a = Activity::default();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        a.record(
            "POST",
            "/Users",
            (Some("okta".into()), ip),
            None,
            &response(201, Some("https://h/scim/v2/Users/abc")),
        );
        a.record(
            "DELETE",
            "/Groups/g1",
            (None, ip),
            Some("authentication required".into()),
            &response(401, None),
        );
        let r = a.recent(10);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].method.as_str(), r[0].endpoint.as_str(), r[0].status),
            ("DELETE", "Groups", 401)
        );
        assert_eq!(r[0].id.as_deref(), Some("g1"));
        assert_eq!(r[0].token, None);
        assert_eq!(r[0].reason.as_deref(), Some("authentication required"));
        assert_eq!(r[0].client, ip);
        assert_eq!(r[1].id.as_deref(), Some("abc"));
        assert_eq!(r[1].token.as_deref(), Some("okta"));
    }

    #[test]
    fn search_paths_are_endpoints_not_ids() {
        assert_eq!(split("/Users/.search"), ("Users/.search".into(), None));
        assert_eq!(split("/Bulk"), ("Bulk".into(), None));
        assert_eq!(split(""), ("/".into(), None));
    }

    #[test]
    fn bounded() {
        let a = Activity::default();
        for i in 0..CAPACITY + 5 {
            let ip = IpAddr::from([192, 0, 2, 1]);
            a.record(
                "GET",
                &format!("/Users/{i}"),
                (None, ip),
                None,
                &response(200, None),
            );
        }
        let r = a.recent(CAPACITY + 10);
        assert_eq!(r.len(), CAPACITY);
        assert_eq!(r[0].id.as_deref(), Some(&*format!("{}", CAPACITY + 4)));
    }
}
