"""torch.hub entrypoints: torch.hub.load("<checkout>", "lenet5_bn", source="local")."""

dependencies = ["torch", "numpy", "safetensors"]


def _entry(name):
    def fn(pretrained: bool = True, dataset: str | None = None, **kwargs):
        import zoo

        # pretrained: the shipped weights, like zoo.load; options that would change them are refused, not dropped
        return zoo.create_model(name, dataset=dataset, pretrained=pretrained, **kwargs)

    fn.__name__ = name
    fn.__doc__ = f"{name} from the zoo (pretrained=True: shipped weights, like zoo.load)."
    return fn


def _register():
    import zoo

    for name in zoo.list_models():
        globals()[name] = _entry(name)


_register()
