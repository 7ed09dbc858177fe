"""The authors' ``resnest`` package as a backbone, for comparing against it."""


def authors_layer4(model, x):
    """The authors' ResNet forward up to ``layer4``: ``(N, 3, H, W)`` ->
    ``(N, C4, H/32, W/32)``.

    Their ``forward`` ends in the classifier, so the backbone's last stage
    has to be reached by hand.
    """
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
    return x
