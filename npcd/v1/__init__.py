"""Generated gRPC/protobuf code for the `npcd.v1` API (built from proto/npcd/v1 by `make`)."""
