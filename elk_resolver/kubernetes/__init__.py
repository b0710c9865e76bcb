"""Running the service in Kubernetes and acting on Kubernetes: RBAC drawn from the policy."""
