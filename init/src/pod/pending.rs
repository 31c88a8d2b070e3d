//! The pods that wait for images init fetches at boot: which app waits for which image, and
//! when a pod has them all (then it is prepared and started while the others run on). A pod
//! one of whose images is refused never starts; the refusal is reported once, naming the app.

use std::collections::BTreeMap;

use aci::manifest::ImageId;
use hostdecl::{FetchSpec, PodPlan};

use crate::pod::runtime::MissingImage;

/// One pod waiting for images.
#[derive(Debug)]
struct Waiting {
    pod: PodPlan,
    /// The image of each fetched-spec app already known, by app index.
    ids: BTreeMap<usize, ImageId>,
    /// The apps still waiting: index → `<pod>/<app>`.
    missing: BTreeMap<usize, String>,
}

/// What a fetch outcome did to the waiting pods.
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// Not the last image of its pod (or not an app that waits).
    Waiting,
    /// The pod has every image: prepare it with these IDs.
    Ready(Box<PodPlan>, BTreeMap<usize, ImageId>),
    /// The pod will not start: one of its images was refused.
    Abandoned(String),
}

/// The pods waiting for images, and the fetches they need.
#[derive(Debug, Default)]
pub struct Pending {
    pods: Vec<Waiting>,
}

/// One fetch to ask for: which app (`<pod>/<app>`) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub who: String,
    pub fetch: FetchSpec,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Adds `pod`, which waits for `missing`; returns the fetches to ask for.
    pub fn wait(
        &mut self,
        pod: &PodPlan,
        ids: BTreeMap<usize, ImageId>,
        missing: Vec<MissingImage>,
    ) -> Vec<Wanted> {
        let wanted: Vec<Wanted> = missing
            .iter()
            .map(|m| Wanted {
                who: format!("{}/{}", pod.name, m.app),
                fetch: m.fetch.clone(),
            })
            .collect();
        self.pods.push(Waiting {
            pod: pod.clone(),
            ids,
            missing: missing
                .into_iter()
                .zip(&wanted)
                .map(|(m, w)| (m.index, w.who.clone()))
                .collect(),
        });
        wanted
    }

    /// App `who`'s image is in the store as `id`.
    pub fn arrived(&mut self, who: &str, id: ImageId) -> Progress {
        let Some(p) = self.position(who) else {
            return Progress::Waiting;
        };
        let waiting = &mut self.pods[p];
        let index = waiting
            .missing
            .iter()
            .find(|(_, w)| w.as_str() == who)
            .map(|(i, _)| *i);
        if let Some(index) = index {
            waiting.missing.remove(&index);
            waiting.ids.insert(index, id);
        }
        if !waiting.missing.is_empty() {
            return Progress::Waiting;
        }
        let done = self.pods.remove(p);
        Progress::Ready(Box::new(done.pod), done.ids)
    }

    /// App `who`'s image was refused: its pod is dropped.
    pub fn refused(&mut self, who: &str) -> Progress {
        match self.position(who) {
            Some(p) => Progress::Abandoned(self.pods.remove(p).pod.name),
            None => Progress::Waiting,
        }
    }

    fn position(&self, who: &str) -> Option<usize> {
        self.pods
            .iter()
            .position(|w| w.missing.values().any(|m| m == who))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: &str) -> PodPlan {
        serde_json::from_str(json).unwrap()
    }

    fn two_apps() -> PodPlan {
        pod(r#"{
            "name": "web",
            "manifest": {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
                {"name": "front", "image": {"name": "images.test/front"}},
                {"name": "back", "image": {"name": "images.test/back"}}
            ]},
            "apps": [{"name": "front"}, {"name": "back"}]
        }"#)
    }

    fn spec(name: &str) -> FetchSpec {
        FetchSpec {
            name: name.into(),
            labels: BTreeMap::new(),
            pinned_id: None,
            url: None,
            signature_url: None,
            allow_http: false,
        }
    }

    fn missing(index: usize, app: &str) -> MissingImage {
        MissingImage {
            index,
            app: app.into(),
            fetch: spec(&format!("images.test/{app}")),
        }
    }

    fn id(c: char) -> ImageId {
        ImageId::new(format!("sha512-{}", c.to_string().repeat(128))).unwrap()
    }

    #[test]
    fn a_pod_is_ready_once_its_last_image_arrived_with_every_id() {
        let mut p = Pending::default();
        let wanted = p.wait(
            &two_apps(),
            BTreeMap::new(),
            vec![missing(0, "front"), missing(1, "back")],
        );
        assert_eq!(
            wanted.iter().map(|w| w.who.as_str()).collect::<Vec<_>>(),
            ["web/front", "web/back"]
        );
        assert_eq!(p.arrived("web/back", id('b')), Progress::Waiting);
        // An app nobody waits for changes nothing.
        assert_eq!(p.arrived("other/x", id('c')), Progress::Waiting);
        match p.arrived("web/front", id('a')) {
            Progress::Ready(pod, ids) => {
                assert_eq!(pod.name, "web");
                assert_eq!(ids, BTreeMap::from([(0, id('a')), (1, id('b'))]));
            }
            other => panic!("{other:?}"),
        }
        assert!(p.is_empty());
    }

    #[test]
    fn an_image_already_in_the_store_counts_and_a_refusal_abandons_the_pod() {
        let mut p = Pending::default();
        p.wait(
            &two_apps(),
            BTreeMap::from([(0, id('a'))]),
            vec![missing(1, "back")],
        );
        assert_eq!(p.refused("web/back"), Progress::Abandoned("web".into()));
        assert!(p.is_empty());
        // Late outcomes for the abandoned pod are ignored.
        assert_eq!(p.arrived("web/back", id('b')), Progress::Waiting);
    }
}
