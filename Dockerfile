# balancerd in a container: built with the Swift 6 toolchain image, shipped on a slim
# runtime image with nothing but the binary (the Swift runtime is linked statically).
FROM swift:6.0-jammy AS build
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
# Package.swift names the embedding example's target: the manifest does not load without it.
COPY Examples ./Examples
RUN swift build -c release --product balancerd --static-swift-stdlib \
 && cp "$(swift build -c release --show-bin-path)/balancerd" /balancerd

FROM ubuntu:jammy
# No supervisor and no shell wrapper: balancerd is PID 1's only child of interest and
# handles SIGTERM (graceful stop) and SIGHUP itself.
COPY --from=build /balancerd /usr/local/bin/balancerd
EXPOSE 80
ENTRYPOINT ["/usr/local/bin/balancerd"]
CMD ["--help"]
