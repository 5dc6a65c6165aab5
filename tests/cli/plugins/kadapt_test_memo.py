"""A connector plugin that exists only in the tests: documents given inline in the source config."""

from langchain_core.documents import Document
from pydantic import Field

from kadapt import hookimpl
from kadapt.connectors import Connector, ConnectorConfig


class MemoConfig(ConnectorConfig):
    memo: list[str] = Field(description="Memo texts; each becomes a document.")


class MemoConnector(Connector):
    kind = "memo"
    Config = MemoConfig
    description = "Inline memos (test plugin)."

    def load(self):
        for index, text in enumerate(self.config.memo):
            yield Document(page_content=text, metadata={"locator": f"memo-{index}", "title": f"Memo {index}"})


@hookimpl
def register_connectors(register):
    register(MemoConnector)
