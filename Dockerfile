# hardneg-server image. Both stages install their packages with
# scripts/install-deps.sh, the script ./scripts/test.sh and the README use,
# so what the tests check is what the image runs. Any Docker-compatible
# builder works; scripts/image-test.sh builds and runs it with podman.
#
#   docker build -t hardneg:dev .
#   docker run -v /path/to/checkpoints:/checkpoints:ro -p 50051:50051 \
#     -p 9464:9464 hardneg:dev
#
# Debug info: the binaries are stripped; their debug info stays in the
# build stage (/out/debug/*.debug, linked by .gnu_debuglink):
#   docker build --target build -t hardneg:build . && \
#   docker create --name dbg hardneg:build && docker cp dbg:/out/debug .

FROM debian:12 AS build
# Lets scripts/image-test.sh remove the build stages of earlier builds.
LABEL io.hardneg.stage=build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
# --build: the compilers and -dev packages only, not the test, demo and
# sanitizer tools.
RUN ./scripts/install-deps.sh --build \
 && rm -rf /var/lib/apt/lists/*
COPY . .
# Compile jobs; empty: ninja's default (cores + 2).
ARG JOBS=
# The git revision --version and hardneg_build_info report (.git is not in
# the build context).
ARG REVISION=unknown
RUN cmake -S . -B /out/build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
 && HARDNEG_REVISION="$REVISION" \
    ninja -C /out/build ${JOBS:+-j$JOBS} hardneg-server hardneg-router hardneg \
 && mkdir -p /out/bin /out/debug \
 && for bin in server/hardneg-server router/hardneg-router client/hardneg; do \
      name=$(basename "$bin"); \
      objcopy --only-keep-debug "/out/build/$bin" "/out/debug/$name.debug" \
      && objcopy --strip-unneeded \
           --add-gnu-debuglink="/out/debug/$name.debug" \
           "/out/build/$bin" "/out/bin/$name" || exit 1; \
    done

FROM debian:12
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="hardneg-server" \
      org.opencontainers.image.description="Hard negatives as a service: gRPC hard-negative mining over a FAISS index of candidate embeddings, swapped live on new checkpoints." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/debian:12"
COPY scripts/install-deps.sh /usr/local/lib/hardneg/install-deps.sh
# --runtime: the shared libraries hardneg-server links, nothing else.
RUN /usr/local/lib/hardneg/install-deps.sh --runtime \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && echo 'hardneg:x:65532:65532:hardneg:/data:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'hardneg:x:65532:' >> /etc/group \
 && mkdir -p /data /checkpoints \
 && chown 65532:65532 /data \
 && chmod 0750 /data
# hardneg-router too: the sharded overlay runs it from this image
# (`command: [hardneg-router]`); it links nothing the server does not.
COPY --from=build /out/bin/hardneg-server /out/bin/hardneg-router \
     /out/bin/hardneg /usr/local/bin/
# Set by the server itself too; here so that `hardneg` and anything else
# run in the container get it (spinning OpenMP threads steal the cores).
ENV OMP_WAIT_POLICY=PASSIVE
USER 65532:65532
WORKDIR /data
# Snapshots of served versions (--data_dir), owned by the server's user.
VOLUME ["/data"]
# grpc, metrics (/metrics over HTTP)
EXPOSE 50051/tcp 9464/tcp
ENTRYPOINT ["/usr/local/bin/hardneg-server"]
# The Kubernetes manifests (deploy/k8s/base/deployment.yaml) pass their
# own arguments; these are for a plain `docker run`.
CMD ["--checkpoints=/checkpoints", "--data_dir=/data", "--host=0.0.0.0", \
     "--grpc_port=50051", "--metrics_port=9464"]
