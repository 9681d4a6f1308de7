"""Generated from protos/eventmgmt/v1; never edit."""
