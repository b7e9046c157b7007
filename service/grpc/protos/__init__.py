"""Generated gRPC stubs of grpc_service.proto (the command is in that file; ``make protos``).

Never import these in a process that also imports ``tritonclient.grpc``: both define the ``inference``
proto package in protobuf's default pool, and the second import fails with "duplicate symbol". The
service and the clients are separate processes; the tests talk to a real server with tritonclient.
"""
