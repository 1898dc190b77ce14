// placeholder until helper-2 lands\nenum _Placeholder {}
