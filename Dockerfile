# balancerd in a container: built with the Swift 6 toolchain image, shipped on a slim
# runtime image with nothing but the binary (the Swift runtime is linked statically) and
# OpenSSL's libssl3.
FROM swift:6.0-jammy AS build
WORKDIR /src
# balancerd links the system's OpenSSL 3 (TLS termination): headers to build, libssl3 to run.
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev && rm -rf /var/lib/apt/lists/*
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
# Package.swift names the embedding example's target: the manifest does not load without it.
COPY Examples ./Examples
RUN swift build -c release --product balancerd --static-swift-stdlib \
 && cp "$(swift build -c release --show-bin-path)/balancerd" /balancerd

FROM ubuntu:jammy
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 && rm -rf /var/lib/apt/lists/*
# No supervisor and no shell wrapper: balancerd is PID 1's only child of interest and
# handles SIGTERM (graceful stop) and SIGHUP itself.
COPY --from=build /balancerd /usr/local/bin/balancerd
EXPOSE 80
ENTRYPOINT ["/usr/local/bin/balancerd"]
CMD ["--help"]
