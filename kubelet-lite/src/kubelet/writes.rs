//! The kubelet's writes to the API server (pod status, the final delete, Events, its Node and
//! Lease), sent as JSON with the object in the response left undecoded.
//!
//! kube-rs's typed calls (`Api::<Pod>::patch_status`, `create`, `get_opt` …) decode the object
//! the API server sends back, which the kubelet never reads, and each instantiates the whole
//! decoder of that type: the one for a Pod alone was 450 KiB of the kubelet's code, resident
//! in every kubelet (and a decode of the full Pod for every status it posted).

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::Request;
use serde_json::Value;

/// The collection of one resource type (`/api/v1/namespaces/default/pods`, `/api/v1/nodes`).
pub struct Collection {
    client: kube::Client,
    request: Request,
}

impl Collection {
    /// The collection `api` addresses, written through its client.
    pub fn of<K: kube::Resource>(api: kube::Api<K>) -> Self {
        let request = Request::new(api.resource_url());
        Collection {
            client: api.into_client(),
            request,
        }
    }

    /// Whether the object `name` exists (`get`, answered 404 or not).
    pub async fn exists(&self, name: &str) -> kube::Result<bool> {
        let request = self
            .request
            .get(name, &Default::default())
            .map_err(kube::Error::BuildRequest)?;
        match self.client.request_text(request).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn create(&self, object: &Value) -> kube::Result<()> {
        let body = serde_json::to_vec(object).map_err(kube::Error::SerdeError)?;
        let request = self
            .request
            .create(&PostParams::default(), body)
            .map_err(kube::Error::BuildRequest)?;
        self.send(request).await
    }

    /// A JSON merge patch of the object `name`.
    pub async fn merge(&self, name: &str, patch: &Value) -> kube::Result<()> {
        let request = self
            .request
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .map_err(kube::Error::BuildRequest)?;
        self.send(request).await
    }

    /// A JSON merge patch of the object's `status` subresource.
    pub async fn merge_status(&self, name: &str, patch: &Value) -> kube::Result<()> {
        let request = self
            .request
            .patch_subresource(
                "status",
                name,
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .map_err(kube::Error::BuildRequest)?;
        self.send(request).await
    }

    pub async fn delete(&self, name: &str, params: &DeleteParams) -> kube::Result<()> {
        let request = self
            .request
            .delete(name, params)
            .map_err(kube::Error::BuildRequest)?;
        self.send(request).await
    }

    /// Sends the request; an error status comes back as [`kube::Error::Api`]. The request's
    /// future (the HTTP client's, several KiB) is allocated while it runs, not made part of
    /// the caller's: a Pod worker, which the kubelet spawns for every Pod at each full sync,
    /// stays small when it has nothing to post.
    async fn send(&self, request: http::Request<Vec<u8>>) -> kube::Result<()> {
        Box::pin(self.client.request_text(request)).await.map(drop)
    }
}
