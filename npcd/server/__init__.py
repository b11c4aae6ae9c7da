"""The gRPC shell: servicer, server lifecycle, conversions. Generated protobuf types stop here."""
