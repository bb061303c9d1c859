"""`notify`: POST JSON to a webhook, or run a command given the message in $ANSFLOW_MESSAGE and on
stdin."""

from __future__ import annotations

import json
import threading

from ansflow.cancel import CancelScope
from ansflow.model import NotifyStep
from ansflow.steps.base import StepContext, StepError, StepResult, StepType, register

WEBHOOK_TIMEOUT_S = 15.0


def post_json(url: str, body: dict[str, object], timeout: float = WEBHOOK_TIMEOUT_S) -> int:
    """POST and return the HTTP status; errors become StepError naming the URL."""
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise StepError(f"webhook {url!r} must be an http:// or https:// URL")
    data = json.dumps(body).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "ansflow"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise StepError(f"webhook {url} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise StepError(f"webhook {url} unreachable: {exc.reason}") from None
    except TimeoutError:
        raise StepError(f"webhook {url} did not answer within {timeout:.0f}s") from None
    except OSError as exc:
        raise StepError(f"webhook {url} failed: {exc}") from None


def post_until_cancelled(
    url: str, body: dict[str, object], scope: CancelScope, timeout: float = WEBHOOK_TIMEOUT_S
) -> int | None:
    """`post_json` that gives up as soon as the step is cancelled or times out (then None).

    urllib cannot be interrupted, so the request runs in a daemon thread that is abandoned on a
    cancel; it ends by itself within `timeout`.
    """
    outcome: dict[str, int | BaseException] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["code"] = post_json(url, body, timeout)
        except BaseException as exc:  # handed to the waiting thread below
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name="ansflow-webhook", daemon=True).start()
    with scope.on_cancel(lambda _reason: done.set()):
        done.wait()
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise error
    code = outcome.get("code")
    return code if isinstance(code, int) else None


@register
class Notify(StepType):
    """Tells people how the run is going; `run.status` is the run's status so far."""

    name = "notify"

    def execute(self, ctx: StepContext) -> StepResult:
        step = ctx.step
        assert isinstance(step, NotifyStep)
        status = str(ctx.services.get("run_status", "running"))
        if step.webhook is not None:
            body = {
                "pipeline": ctx.pipeline,
                "run_id": ctx.run_id,
                "status": status,
                "message": step.message,
            }
            code = post_until_cancelled(step.webhook, body, ctx.scope)
            if code is None:
                return StepResult("failed", None, f"stopped while posting to {step.webhook}")
            ctx.log(f"webhook answered HTTP {code}")
            return StepResult("success", None, details={"webhook_status": code})
        assert step.command is not None
        ctx.env["ANSFLOW_MESSAGE"] = step.message
        path = f"{ctx.temp_dir}/script"
        ctx.runner.write_file(path, step.command.encode("utf-8"), 0o700)
        from ansflow.remote.base import shell_argv

        code = ctx.run_command(shell_argv(None, path), stdin=step.message.encode("utf-8") + b"\n")
        return StepResult.from_exit(code, "notify command")
