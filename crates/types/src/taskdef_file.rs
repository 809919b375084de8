//! Reading task definition files written in ECS's JSON shape or as YAML.
