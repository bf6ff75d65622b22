//! Method → provider lookup, and the catalog the parser validates methods against.

use crate::Provider;
use gleitzeit_core::parse::{MethodCatalog, CORE_METHODS};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Registry {
    providers: HashMap<&'static str, Arc<dyn Provider>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn register(&mut self, provider: Arc<dyn Provider>) {
        self.providers.insert(provider.protocol(), provider);
    }

    pub fn for_method(&self, method: &str) -> Option<&Arc<dyn Provider>> {
        let protocol = method.split('/').next().unwrap_or(method);
        self.providers.get(protocol)
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.providers.values()
    }

    pub async fn shutdown(&self) {
        for provider in self.providers.values() {
            provider.shutdown().await;
        }
    }
}

impl MethodCatalog for Registry {
    fn has_method(&self, method: &str) -> bool {
        // Methods of protocols that exist in the product but have no provider in
        // this process still parse; running them reports the missing provider.
        CORE_METHODS.contains(&method)
            || self
                .for_method(method)
                .is_some_and(|p| p.methods().iter().any(|m| m.method == method))
    }

    fn has_function(&self, name: &str) -> bool {
        gleitzeit_functions::find(name).is_some()
    }

    fn all_names(&self) -> Vec<String> {
        let mut names: Vec<String> = CORE_METHODS.iter().map(|s| s.to_string()).collect();
        for provider in self.providers.values() {
            names.extend(provider.methods().into_iter().map(|m| m.method));
        }
        names.extend(
            gleitzeit_functions::all()
                .iter()
                .map(|f| f.name.to_string()),
        );
        names.sort();
        names.dedup();
        names
    }
}
