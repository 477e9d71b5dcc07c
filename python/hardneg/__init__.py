"""hardneg: a Python client of the hard-negative mining service.

    import hardneg
    client = hardneg.Client("localhost:50051", num_negatives=8)
    res = client.mine(queries, positive_ids=positives)
    client.publish(embeddings, ids, labels, name="epoch-3", step=3)
    hardneg.write_checkpoint("/ckpt", embeddings, ids, name="epoch-3", step=3)
    miner = hardneg.NegativeMiner(client, num_negatives=8)  # PyTorch loops

See python/README.md. The gRPC stubs (hardneg.v1.miner_pb2*) are generated
when the package is built (`pip install ./python`), or in place by
python/generate.sh.
"""

from hardneg.checkpoint import (CheckpointWriter, check_version_name,
                                write_checkpoint)
from hardneg.client import (SAMPLING, Client, IndexInfo, IndexVersion,
                            MineResult, MineStream, build_request, to_result)
from hardneg.errors import HardnegError, MineError, PublishError
from hardneg.publish import PublishProgress
from hardneg.training import NegativeMiner, Negatives

__all__ = [
    "Client", "MineStream", "MineResult", "HardnegError", "MineError",
    "PublishError", "IndexInfo", "IndexVersion", "SAMPLING", "build_request",
    "to_result", "PublishProgress", "CheckpointWriter", "write_checkpoint",
    "check_version_name", "NegativeMiner", "Negatives",
]
__version__ = "0.1.0"
