# buildah: buildah 1.28 refuses symbolic --chmod (u=rwx,g=rx,o=, which BuildKit 0.13 / dockerfile 1.14 takes): the octal equivalent
FROM diff/busybox:1
COPY --chmod=0750 tree /chmod-tree/
COPY --chmod=0750 script.sh /symbolic.sh
COPY --chown=app:app --chmod=600 tree /both/
COPY tree /plain/
ADD --chown=1001 tree /add-tree/
RUN mkdir -p /exists && chmod 0700 /exists && chown 1001:1002 /exists
COPY tree /exists/
COPY --chown=app tree/top /exists/owned/
