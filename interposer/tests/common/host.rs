//! Test hosts: users, network namespaces, mount namespaces (stub: being written).
