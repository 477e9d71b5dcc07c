"""hardneg: a Python client of the hard-negative mining service.

    import hardneg
    client = hardneg.Client("localhost:50051", num_negatives=8)
    res = client.mine(queries, positive_ids=positives)

See python/README.md. The gRPC stubs (hardneg.v1.miner_pb2*) are generated
when the package is built (`pip install ./python`), or in place by
python/generate.sh.
"""

from hardneg.client import (SAMPLING, Client, IndexInfo, IndexVersion,
                            MineError, MineResult, MineStream, build_request,
                            to_result)

__all__ = [
    "Client", "MineStream", "MineResult", "MineError", "IndexInfo",
    "IndexVersion", "SAMPLING", "build_request", "to_result",
]
__version__ = "0.1.0"
