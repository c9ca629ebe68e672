"""The tests here run inside an MPI job, one pytest per rank:

    mpiexec -n 2 python -m pytest tests/distributed

``tests/test_distributed.py`` launches them so (and with 3 ranks).  Outside an MPI job
(the plain ``python -m pytest``) they are not collected: each would be a job of one.
"""
import os

#: what mpiexec puts in each rank's environment: MPICH (Hydra), Open MPI, PMIx
_JOB_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")

if not any(name in os.environ for name in _JOB_VARIABLES):
    collect_ignore_glob = ["*.py"]
