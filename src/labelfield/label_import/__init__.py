"""Labels from annotation tools into a scene: `labelfield labels import SRC --scene SCENE`.

readers.py decodes CVAT (mask zip, XML), Label Studio JSON, COCO JSON and label PNGs into `SourceLabels`
(the RLE decoders live next to their encoders in labelfield.export); merge.py matches classes by name;
command.py writes the scene's label files and class table.
"""
