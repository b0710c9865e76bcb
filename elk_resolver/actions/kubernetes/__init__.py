"""The Kubernetes objects a policy-allowed kubectl command acts on, and the RBAC (a Role and
RoleBinding per allowlisted namespace) that grants exactly that."""
