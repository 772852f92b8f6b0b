"""Model-from-code entry for the pyfunc model (MLflow loads this file; see xfer.serving)."""
from mlflow.models import set_model

from xfer.serving import XferModel

set_model(XferModel())
