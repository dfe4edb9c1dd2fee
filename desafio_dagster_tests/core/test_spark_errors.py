"""A failed Spark job's error: Spark's own cause in one line, what to change, and whether another attempt
can succeed (only a lost executor or connection). The texts are Spark 4.3's own messages."""

from desafio_dagster.core.errors import TransientError
from desafio_dagster.core.spark.spark_session import SparkJobError, spark_cause, spark_job_error

BROADCAST = """An error occurred while calling o25281.collectToPython.
: org.apache.spark.SparkException: Not enough memory to build and broadcast the table to all worker nodes. As a workaround, you can either disable broadcast by setting spark.sql.autoBroadcastJoinThreshold to -1 or increase the spark driver memory by setting spark.driver.memory to a higher value.
\tat org.apache.spark.sql.errors.QueryExecutionErrors$.notEnoughMemoryToBuildAndBroadcastTableError(QueryExecutionErrors.scala:2221)
\tat org.apache.spark.sql.execution.exchange.BroadcastExchangeExec.$anonfun$relationFuture$1(BroadcastExchangeExec.scala:216)
Caused by: java.lang.OutOfMemoryError: Java heap space
\tat java.base/java.util.Arrays.copyOf(Arrays.java:3537)
"""
LOST = """An error occurred while calling o181.collectToPython.
: org.apache.spark.SparkException: Job aborted due to stage failure: Task 3 in stage 2.0 failed 4 times, most recent failure: Lost task 3.3 in stage 2.0 (TID 17) (10.0.0.7 executor 1): ExecutorLostFailure (executor 1 exited caused by one of the running tasks) Reason: Remote RPC client disassociated.
\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:2898)
"""
PYTHON = """An error occurred while calling o90.collectToPython.
: org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 0.0 failed 1 times, most recent failure: Lost task 0.0 in stage 0.0 (TID 0) (host executor driver): org.apache.spark.api.python.PythonException: Traceback (most recent call last):
  File "/work/desafio_dagster/core/export/publish.py", line 150, in write
    raise KeyError(client)
KeyError: 'client 7 has no file name'
\tat org.apache.spark.api.python.BasePythonRunner$ReaderIterator.handlePythonException(PythonRunner.scala:624)
"""


def test_out_of_memory_says_its_cause_and_the_setting_to_change_and_is_not_retried():
    error = spark_job_error(Exception(BROADCAST), "writing the client files")
    assert isinstance(error, SparkJobError) and not isinstance(error, TransientError)
    assert "OutOfMemoryError: Java heap space" in str(error) and "spark.driver.memory" in str(error)
    assert "\n" not in str(error) and "collectToPython" not in str(error)


def test_a_lost_executor_is_transient():
    error = spark_job_error(Exception(LOST), "writing the client files")
    assert isinstance(error, TransientError)
    assert "lost an executor" in str(error)


def test_a_tasks_python_exception_is_the_cause():
    assert spark_cause(Exception(PYTHON)) == "KeyError: 'client 7 has no file name'"
    assert not isinstance(spark_job_error(Exception(PYTHON), "x"), TransientError)


def test_the_first_non_wrapper_exception_without_a_root_cause():
    assert spark_cause(Exception(BROADCAST.split("Caused by")[0])).startswith(
        "SparkException: Not enough memory to build and broadcast the table")
    assert spark_cause(Exception("")) == "Exception"
