//! kubypass control plane: turns Kubernetes Services and EndpointSlices (from the API
//! server or from manifest files) into the dataplane's `ServiceTable`, and publishes each
//! new table to the workers with one lock-free pointer swap.
#![forbid(unsafe_code)]
