"""`python -m service`: run the façade with uvicorn on SERVICE_HOST:SERVICE_PORT."""

from __future__ import annotations

import sys


def main() -> int:
    import uvicorn

    from service.app import create_app
    from service.domain.manifest import ManifestError
    from service.platform.logs import get_logger
    from service.runtime import check_store
    from service.settings import SettingsError, load_settings
    from service.store.edge_client import LocalModeFolder, StoreLocked

    try:
        settings = load_settings()
        app = create_app(settings, freeze_gc=True)
    except (SettingsError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        # Here rather than in the app's start-up, where a refusal would end as uvicorn's traceback.
        check_store(settings)
    except LocalModeFolder as exc:
        # One JSON log line (create_app configured logging) naming the command that converts the folder.
        get_logger("service").error(
            "cannot start", error="local_mode_folder", reason=str(exc), command=exc.command
        )
        return 2
    except StoreLocked as exc:
        get_logger("service").error("cannot start", error="store_locked", reason=str(exc))
        return 2
    uvicorn.run(
        app,
        host=settings.service_host,
        port=settings.service_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        # TLS straight from the service when no proxy terminates it (SSL_CERTFILE/SSL_KEYFILE).
        ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
