# hardneg-server image. Built from the same install script that
# ./scripts/test.sh and ./scripts/demo.sh use, so what the tests check is
# what the image runs.
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN ./scripts/install-deps.sh
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
 && ninja -C build hardneg-server hardneg

FROM debian:12
COPY scripts/install-deps.sh /usr/local/lib/hardneg/install-deps.sh
RUN /usr/local/lib/hardneg/install-deps.sh --runtime \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/server/hardneg-server /usr/local/bin/
COPY --from=build /src/build/client/hardneg /usr/local/bin/
ENV OMP_WAIT_POLICY=PASSIVE
USER 65532:65532
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/hardneg-server"]
CMD ["--checkpoints", "/checkpoints", "--data_dir", "/data", "--grpc_port", "50051", "--metrics_port", "9464"]
