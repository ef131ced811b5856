"""Stack composition: the only package that reads Pulumi config and wires components together."""
